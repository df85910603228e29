// Package tensor holds the engine's element types, the quantized block
// formats that GGUF files use, and the compute kernels (dot products,
// matrix-vector and matrix-matrix products) over them.
//
// Every fast kernel has a plain reference kernel beside it (the *Ref
// functions); tests hold the two equal. Quantized kernels follow llama.cpp's
// scheme: the activation row is quantized once (to Q8_0 or Q8_K) and the
// products are computed in integers per block, rather than dequantizing the
// weights to float.
//
// Shapes follow GGUF: a matrix with Cols inputs and Rows outputs stores Rows
// rows of Cols elements each (ggml ne0 = Cols, ne1 = Rows), so y = W x is
// y[r] = dot(row r, x).
package tensor

import (
	"errors"
	"fmt"
	"strings"
)

// DType is an element type, numbered as ggml numbers its types (the values
// stored in GGUF tensor infos).
type DType uint32

// The ggml types. Only those with Computable() == true can be used in
// kernels; the others are known so that files holding them can be parsed,
// inspected and refused with a precise message.
const (
	F32     DType = 0
	F16     DType = 1
	Q4_0    DType = 2
	Q4_1    DType = 3
	Q5_0    DType = 6
	Q5_1    DType = 7
	Q8_0    DType = 8
	Q8_1    DType = 9
	Q2_K    DType = 10
	Q3_K    DType = 11
	Q4_K    DType = 12
	Q5_K    DType = 13
	Q6_K    DType = 14
	Q8_K    DType = 15
	IQ2_XXS DType = 16
	IQ2_XS  DType = 17
	IQ3_XXS DType = 18
	IQ1_S   DType = 19
	IQ4_NL  DType = 20
	IQ3_S   DType = 21
	IQ2_S   DType = 22
	IQ4_XS  DType = 23
	I8      DType = 24
	I16     DType = 25
	I32     DType = 26
	I64     DType = 27
	F64     DType = 28
	IQ1_M   DType = 29
	BF16    DType = 30
	TQ1_0   DType = 34
	TQ2_0   DType = 35
	MXFP4   DType = 39
)

// QK is the number of elements in a "K-quant" super-block (Q4_K, Q6_K, Q8_K).
const QK = 256

// ErrUnknownType is returned for a type id that ggml does not define.
var ErrUnknownType = errors.New("tensor: unknown element type")

type typeInfo struct {
	name       string
	blockSize  int  // elements per block
	blockBytes int  // bytes per block
	computable bool // the engine has kernels for it
	storable   bool // may appear as a weight in a model file the engine runs
}

var types = map[DType]typeInfo{
	F32:     {"F32", 1, 4, true, true},
	F16:     {"F16", 1, 2, true, true},
	Q4_0:    {"Q4_0", 32, 18, true, true},
	Q4_1:    {"Q4_1", 32, 20, false, false},
	Q5_0:    {"Q5_0", 32, 22, false, false},
	Q5_1:    {"Q5_1", 32, 24, false, false},
	Q8_0:    {"Q8_0", 32, 34, true, true},
	Q8_1:    {"Q8_1", 32, 36, false, false},
	Q2_K:    {"Q2_K", QK, 84, false, false},
	Q3_K:    {"Q3_K", QK, 110, false, false},
	Q4_K:    {"Q4_K", QK, 144, true, true},
	Q5_K:    {"Q5_K", QK, 176, false, false},
	Q6_K:    {"Q6_K", QK, 210, true, true},
	Q8_K:    {"Q8_K", QK, 292, true, false},
	IQ2_XXS: {"IQ2_XXS", QK, 66, false, false},
	IQ2_XS:  {"IQ2_XS", QK, 74, false, false},
	IQ3_XXS: {"IQ3_XXS", QK, 98, false, false},
	IQ1_S:   {"IQ1_S", QK, 50, false, false},
	IQ4_NL:  {"IQ4_NL", 32, 18, false, false},
	IQ3_S:   {"IQ3_S", QK, 110, false, false},
	IQ2_S:   {"IQ2_S", QK, 82, false, false},
	IQ4_XS:  {"IQ4_XS", QK, 136, false, false},
	I8:      {"I8", 1, 1, false, false},
	I16:     {"I16", 1, 2, false, false},
	I32:     {"I32", 1, 4, false, false},
	I64:     {"I64", 1, 8, false, false},
	F64:     {"F64", 1, 8, false, false},
	IQ1_M:   {"IQ1_M", QK, 56, false, false},
	BF16:    {"BF16", 1, 2, true, true},
	TQ1_0:   {"TQ1_0", QK, 54, false, false},
	TQ2_0:   {"TQ2_0", QK, 66, false, false},
	MXFP4:   {"MXFP4", 32, 17, false, false},
}

// Known reports whether t is a type id ggml defines.
func (t DType) Known() bool { _, ok := types[t]; return ok }

// String returns ggml's name for the type, or "type(N)" for unknown ids.
func (t DType) String() string {
	if info, ok := types[t]; ok {
		return info.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockSize is the number of elements in one block (1 for float types).
// It panics for unknown types.
func (t DType) BlockSize() int { return t.info().blockSize }

// BlockBytes is the size in bytes of one block. It panics for unknown types.
func (t DType) BlockBytes() int { return t.info().blockBytes }

// Computable reports whether the engine has kernels for the type.
func (t DType) Computable() bool { return types[t].computable }

// Storable reports whether the engine runs model weights stored in the type.
func (t DType) Storable() bool { return types[t].storable }

// BytesPerElement is the average storage per element, for size estimates.
func (t DType) BytesPerElement() float64 {
	info := t.info()
	return float64(info.blockBytes) / float64(info.blockSize)
}

// RowBytes returns the size in bytes of n elements of type t. n must be a
// multiple of the block size.
func (t DType) RowBytes(n int) (int, error) {
	info, ok := types[t]
	if !ok {
		return 0, fmt.Errorf("%w %d", ErrUnknownType, uint32(t))
	}
	if n%info.blockSize != 0 {
		return 0, fmt.Errorf("tensor: %d elements of %s is not a whole number of %d-element blocks", n, t, info.blockSize)
	}
	return n / info.blockSize * info.blockBytes, nil
}

// VecDotType is the type an activation row is converted to before a dot
// product with a weight row of type t, as llama.cpp's CPU backend does:
// float weights see activations rounded to their own type, 32-element quants
// see Q8_0 and K-quants see Q8_K.
func (t DType) VecDotType() DType {
	switch t {
	case Q8_0, Q4_0:
		return Q8_0
	case Q4_K, Q6_K:
		return Q8_K
	default:
		return t
	}
}

func (t DType) info() typeInfo {
	info, ok := types[t]
	if !ok {
		panic(fmt.Sprintf("tensor: unknown element type %d", uint32(t)))
	}
	return info
}

// ParseDType parses a type name such as "q4_k" or "F16" (any case).
func ParseDType(name string) (DType, error) {
	for t, info := range types {
		if strings.EqualFold(info.name, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("tensor: unknown type name %q", name)
}
