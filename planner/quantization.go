package planner

import (
	"fmt"
	"strings"
)

// Quantization is the storage format of the weights. The spellings match the
// CRD's spec.quantization enum and the engine's --quantization flag.
type Quantization string

const (
	// Auto lets the planner choose; in Overrides it is the same as "".
	Auto Quantization = "Auto"
	// BF16 stores weights as bfloat16: 2 bytes per weight.
	BF16 Quantization = "BF16"
	// FP8 stores weights as float8 (e4m3) with per-tensor scales: 1 byte per
	// weight. Only accelerators with FP8 tensor cores offer it.
	FP8 Quantization = "FP8"
	// Int8 stores weights as GGML Q8_0 blocks: 32 int8 values and one f16
	// scale in 34 bytes (1.0625 bytes per weight).
	Int8 Quantization = "Int8"
	// Int4 stores weights as GGML Q4_0 or Q4_K blocks: 18 bytes per 32
	// weights (0.5625 bytes per weight).
	Int4 Quantization = "Int4"
)

// Quantizations returns the concrete quantizations from highest to lowest
// precision, the order the planner prefers them in.
func Quantizations() []Quantization {
	return []Quantization{BF16, FP8, Int8, Int4}
}

// QuantizationNames returns the accepted spellings for validation, Auto
// included, in the CRD enum's order.
func QuantizationNames() []string {
	return []string{string(Auto), string(BF16), string(FP8), string(Int8), string(Int4)}
}

// ParseQuantization accepts any case of Auto, BF16, FP8, Int8 or Int4 (and ""
// as Auto). It returns an error wrapping ErrUnknownQuantization otherwise.
func ParseQuantization(s string) (Quantization, error) {
	if s == "" {
		return Auto, nil
	}
	for _, name := range QuantizationNames() {
		if strings.EqualFold(s, name) {
			return Quantization(name), nil
		}
	}
	return "", fmt.Errorf("%w: %q (want one of %s)", ErrUnknownQuantization, s, strings.Join(QuantizationNames(), ", "))
}

// BytesPerWeight is the storage cost of one quantized weight, block scales
// included; it matches the engine's formats. It panics on Auto or an unknown
// value, which are programmer errors.
func (q Quantization) BytesPerWeight() float64 {
	switch q {
	case BF16:
		return 2
	case FP8:
		return 1
	case Int8:
		return 34.0 / 32.0
	case Int4:
		return 18.0 / 32.0
	}
	panic(fmt.Sprintf("planner: no bytes per weight for quantization %q", string(q)))
}

// rank orders quantizations by precision: 0 is the highest.
func (q Quantization) rank() int {
	for i, c := range Quantizations() {
		if c == q {
			return i
		}
	}
	return len(Quantizations())
}
