// Package safetensors reads and writes safetensors files, the checkpoint
// format of Hugging Face repositories, single or sharded through a
// model.safetensors.index.json.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON, then
// the data section. The JSON maps each tensor name to its dtype, shape and
// [begin, end) byte range in the data section; the optional "__metadata__"
// entry maps strings to strings. Tensors are stored row-major (C order), so
// a PyTorch [out, in] weight is out rows of in elements.
//
// Parse validates everything the header claims before any tensor is used:
// the header length, JSON syntax, duplicate keys, dtypes, shapes (and that
// their element count fits), that each byte range matches its shape, lies
// inside the file, and that the ranges tile the data section without
// overlaps or holes, as the format requires. A File made by Open is a
// read-only memory map: TensorData returns sub-slices of it, never copies.
package safetensors

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// MaxHeaderSize bounds the JSON header (100 MB, the reference
// implementation's limit), so a corrupt length cannot make the reader
// allocate gigabytes.
const MaxHeaderSize = 100 << 20

// MaxRank is the most dimensions a tensor may have here.
const MaxRank = 16

// Sentinel errors; the errors returned wrap one of them.
var (
	ErrTruncated = errors.New("safetensors: file is truncated")
	ErrMalformed = errors.New("safetensors: malformed file")
	ErrNotFound  = errors.New("safetensors: not found")
)

// DType is a safetensors element type, as spelled in the header.
type DType string

// The element types of the format.
const (
	BOOL    DType = "BOOL"
	U8      DType = "U8"
	I8      DType = "I8"
	F8E5M2  DType = "F8_E5M2"
	F8E4M3  DType = "F8_E4M3"
	I16     DType = "I16"
	U16     DType = "U16"
	F16     DType = "F16"
	BF16    DType = "BF16"
	I32     DType = "I32"
	U32     DType = "U32"
	F32     DType = "F32"
	F64     DType = "F64"
	I64     DType = "I64"
	U64     DType = "U64"
	F8E8M0  DType = "F8_E8M0"
	F4      DType = "F4"
	F6E2M3  DType = "F6_E2M3"
	F6E3M2  DType = "F6_E3M2"
	unknown DType = ""
)

// bits per element of each dtype.
var dtypeBits = map[DType]int{
	BOOL: 8, U8: 8, I8: 8, F8E5M2: 8, F8E4M3: 8, F8E8M0: 8, I16: 16, U16: 16, F16: 16, BF16: 16,
	I32: 32, U32: 32, F32: 32, F64: 64, I64: 64, U64: 64, F4: 4, F6E2M3: 6, F6E3M2: 6,
}

// Known reports whether d is a dtype of the format.
func (d DType) Known() bool { _, ok := dtypeBits[d]; return ok }

// Bits is the storage per element.
func (d DType) Bits() int { return dtypeBits[d] }

// Engine returns the engine's tensor type for d; ok is false for the types
// the engine does not run (integers, F64, FP8 and smaller floats).
func (d DType) Engine() (t tensor.DType, ok bool) {
	switch d {
	case F32:
		return tensor.F32, true
	case F16:
		return tensor.F16, true
	case BF16:
		return tensor.BF16, true
	}
	return 0, false
}

// FromEngine returns the safetensors dtype of an engine type (F32, F16 and
// BF16 only).
func FromEngine(t tensor.DType) (DType, bool) {
	switch t {
	case tensor.F32:
		return F32, true
	case tensor.F16:
		return F16, true
	case tensor.BF16:
		return BF16, true
	}
	return unknown, false
}

// TensorInfo describes one tensor. Begin and End are byte offsets relative
// to the start of the data section.
type TensorInfo struct {
	Name       string
	DType      DType
	Shape      []int64
	Begin, End int64
}

// Elements is the number of elements.
func (t *TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Size is the tensor's size in bytes.
func (t *TensorInfo) Size() int64 { return t.End - t.Begin }

// Header is a parsed safetensors header.
type Header struct {
	// Tensors in data-section order.
	Tensors []TensorInfo
	// Metadata is the "__metadata__" map, nil when absent.
	Metadata map[string]string
	// DataOffset is the absolute offset of the data section (8 + header length).
	DataOffset int64

	index map[string]int
}

// Tensor returns the named tensor's description.
func (h *Header) Tensor(name string) (*TensorInfo, bool) {
	i, ok := h.index[name]
	if !ok {
		return nil, false
	}
	return &h.Tensors[i], true
}

// ParseHeader parses and validates the header of a safetensors file whose
// bytes (the whole file) are b.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: %d bytes, need 8 for the header length", ErrTruncated, len(b))
	}
	n := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header length %d exceeds the %d-byte limit", ErrMalformed, n, MaxHeaderSize)
	}
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("%w: header length %d but only %d bytes follow", ErrTruncated, n, len(b)-8)
	}
	if n < 2 {
		return nil, fmt.Errorf("%w: header length %d is too short for a JSON object", ErrMalformed, n)
	}
	h, err := parseJSONHeader(b[8 : 8+n])
	if err != nil {
		return nil, err
	}
	h.DataOffset = int64(8 + n)
	if err := h.checkRanges(int64(len(b)) - h.DataOffset); err != nil {
		return nil, err
	}
	return h, nil
}

// checkRanges verifies each tensor's byte range against its shape and the
// data section, and that the ranges tile the section exactly.
func (h *Header) checkRanges(dataSize int64) error {
	for i := range h.Tensors {
		t := &h.Tensors[i]
		elems := int64(1)
		for _, d := range t.Shape {
			if d != 0 && elems > math.MaxInt64/8/d {
				return fmt.Errorf("%w: tensor %q: shape %v has too many elements", ErrMalformed, t.Name, t.Shape)
			}
			elems *= d
		}
		bits := elems * int64(t.DType.Bits())
		if bits%8 != 0 {
			return fmt.Errorf("%w: tensor %q: %d %s elements do not fill whole bytes", ErrMalformed, t.Name, elems, t.DType)
		}
		if t.Begin > t.End {
			return fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] are reversed", ErrMalformed, t.Name, t.Begin, t.End)
		}
		if t.End-t.Begin != bits/8 {
			return fmt.Errorf("%w: tensor %q: %s %v needs %d bytes, data_offsets [%d, %d] give %d", ErrMalformed, t.Name, t.DType, t.Shape, bits/8, t.Begin, t.End, t.End-t.Begin)
		}
		if t.End > dataSize {
			return fmt.Errorf("%w: tensor %q ends at data offset %d, past the %d-byte data section", ErrTruncated, t.Name, t.End, dataSize)
		}
	}
	sort.SliceStable(h.Tensors, func(i, j int) bool {
		a, b := &h.Tensors[i], &h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	var at int64
	for i := range h.Tensors {
		t := &h.Tensors[i]
		switch {
		case t.Begin < at:
			return fmt.Errorf("%w: tensor %q [%d, %d) overlaps the tensor before it, which ends at %d", ErrMalformed, t.Name, t.Begin, t.End, at)
		case t.Begin > at:
			return fmt.Errorf("%w: a hole of %d bytes before tensor %q at data offset %d", ErrMalformed, t.Begin-at, t.Name, at)
		}
		at = t.End
	}
	if at != dataSize {
		return fmt.Errorf("%w: tensors cover %d bytes of the %d-byte data section", ErrMalformed, at, dataSize)
	}
	h.index = make(map[string]int, len(h.Tensors))
	for i, t := range h.Tensors {
		h.index[t.Name] = i
	}
	return nil
}
