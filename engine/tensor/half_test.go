package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestFP16RoundTripIsExactForEveryHalf(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := FP16ToFP32(h)
		if f != f { // NaN: only check it stays NaN
			if g := FP16ToFP32(FP32ToFP16(f)); g == g {
				t.Fatalf("NaN %#04x did not stay NaN", h)
			}
			continue
		}
		if got := FP32ToFP16(f); got != h {
			t.Fatalf("FP32ToFP16(FP16ToFP32(%#04x)=%g) = %#04x", h, f, got)
		}
	}
}

func TestFP32ToFP16RoundsToNearestEven(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"halfway between 1 and the next half rounds to even (down)", 1 + 1.0/2048, 0x3c00},
		{"halfway above an odd mantissa rounds up", 1 + 3.0/2048, 0x3c02},
		{"just above halfway rounds up", math.Nextafter32(1+1.0/2048, 2), 0x3c01},
		{"largest half", 65504, 0x7bff},
		{"overflow to infinity", 65520, 0x7c00},
		{"smallest subnormal", float32(math.Ldexp(1, -24)), 0x0001},
		{"half the smallest subnormal rounds to zero (even)", float32(math.Ldexp(1, -25)), 0x0000},
		{"negative", -2, 0xc000},
		{"subnormal rounding carries into normal", float32(math.Ldexp(1, -14)) - float32(math.Ldexp(1, -26)), 0x0400},
	}
	for _, tt := range tests {
		if got := FP32ToFP16(tt.in); got != tt.want {
			t.Errorf("%s: FP32ToFP16(%g) = %#04x, want %#04x", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestBF16(t *testing.T) {
	if got := FP32ToBF16(1); got != 0x3f80 {
		t.Fatalf("FP32ToBF16(1) = %#x", got)
	}
	// 1 + 2^-8 is exactly halfway between bf16 1 and 1+2^-7: ties to even (down).
	if got := FP32ToBF16(1 + 1.0/256); got != 0x3f80 {
		t.Fatalf("tie did not round to even: %#x", got)
	}
	if got := FP32ToBF16(1 + 3.0/256); got != 0x3f82 {
		t.Fatalf("tie above odd did not round up: %#x", got)
	}
	if got := BF16ToFP32(0xc040); got != -3 {
		t.Fatalf("BF16ToFP32(0xc040) = %g", got)
	}
}

// roundHalfAway must be C's roundf (math.Round) for every float32 a
// quantizer can meet, including the halves and the float32 just below 0.5
// (where adding 0.5 in float32 would round up).
func TestRoundHalfAway(t *testing.T) {
	cases := []float32{0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -127.5, 127,
		math.Nextafter32(0.5, 0), -math.Nextafter32(0.5, 0), math.Nextafter32(1.5, 0),
		math.Nextafter32(2.5, 10), 1e-30, -1e-30, math.SmallestNonzeroFloat32}
	rng := rand.New(rand.NewPCG(9, 9))
	for range 100000 {
		cases = append(cases, float32(rng.NormFloat64()*100))
	}
	for _, x := range cases {
		if got, want := roundHalfAway(x), float32(math.Round(float64(x))); got != want {
			t.Fatalf("roundHalfAway(%v) = %v, want %v", x, got, want)
		}
	}
}
