package model

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// Quantization names accepted by LoadOptions.Quantization and the
// --quantization flag, and the weight type each converts to. "int4" is Q4_0:
// it has the engine's packed integer kernels (several times faster on CPU
// than Q4_K's today), needs only 32-element rows, and quantizes at memory
// speed; Q4_K's finer scales buy quality at a cost the engine does not yet
// pay back.
var quantizations = map[string]tensor.DType{
	"int8": tensor.Q8_0,
	"int4": tensor.Q4_0,
	"bf16": tensor.BF16,
}

// ErrQuantization reports a conversion the engine refuses.
var ErrQuantization = errors.New("model: invalid quantization")

// ParseQuantization maps a --quantization value to the weight type it
// produces; "auto" and "" give ok == false (keep the file's types). "fp8"
// runs as Q8_0 on the CPU backend.
func ParseQuantization(s string) (t tensor.DType, ok bool, err error) {
	switch q := strings.ToLower(s); q {
	case "", "auto":
		return 0, false, nil
	case "fp8":
		// The CPU backend has no FP8 kernels. Q8_0 takes the same memory
		// (8.5 bits per weight against 8) at more precision, so a plan sized
		// for FP8 still fits; a GPU backend would run FP8 itself.
		return tensor.Q8_0, true, nil
	default:
		t, found := quantizations[q]
		if !found {
			return 0, false, fmt.Errorf("%w: %q (want auto, bf16, fp8, int8 or int4)", ErrQuantization, s)
		}
		return t, true, nil
	}
}

// bits is the storage per weight, to order types by precision.
func bits(t tensor.DType) float64 { return 8 * t.BytesPerElement() }

func checkConvertible(from, to tensor.DType) error {
	if bits(from) < bits(to)-0.01 {
		return fmt.Errorf("%w: the file holds %s weights (%.1f bits each); converting them to %s (%.1f bits) would only upcast, not add precision: use --quantization auto or a higher-precision file",
			ErrQuantization, from, bits(from), to, bits(to))
	}
	return nil
}

// needsConversion is false when from is already at to's precision (F16 for
// a BF16 target, Q4_K for Q4_0, and so on).
func needsConversion(from, to tensor.DType) bool { return bits(from) > bits(to)+0.01 }

func convertMatrix(src *tensor.Matrix, to tensor.DType, pool *tensor.Pool) (*tensor.Matrix, error) {
	rb, err := to.RowBytes(src.Cols)
	if err != nil {
		return nil, fmt.Errorf("%w: %d-column rows cannot be stored as %s: %v", ErrQuantization, src.Cols, to, err)
	}
	out := make([]byte, src.Rows*rb)
	pool.ForWorker(src.Rows, 16, func(_, lo, hi int) {
		row := make([]float32, src.Cols)
		for r := lo; r < hi; r++ {
			tensor.Dequantize(row, src.Row(r), src.Type, src.Cols)
			tensor.Quantize(out[r*rb:(r+1)*rb], row, to, src.Cols)
		}
	})
	return tensor.NewMatrix(to, src.Rows, src.Cols, out)
}
