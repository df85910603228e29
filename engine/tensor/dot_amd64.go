//go:build amd64 && !purego

package tensor

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useAVX2 selects the assembly kernels; they need AVX2, FMA and F16C
// (every x86 CPU since Haswell / Zen 1 has all three).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

//go:noescape
func dotF32AVX2(w *byte, x *float32, n int) float32

//go:noescape
func dotF16AVX2(w *byte, x *float32, n int) float32

//go:noescape
func dotBF16AVX2(w *byte, x *float32, n int) float32

//go:noescape
func dotQ8_0AVX2(w *byte, x *int8, d *float32, nb int) float32

//go:noescape
func dotQ4_0AVX2(w *byte, x *int8, d *float32, nb int) float32

//go:noescape
func dotQ8_0x4AVX2(w *byte, x *int8, d *float32, nb int, xstride int, out *[4]float32)

//go:noescape
func dotQ4_0x4AVX2(w *byte, x *int8, d *float32, nb int, xstride int, out *[4]float32)

func floatRow(a *Acts, r int) []float32 { return a.F[r*a.Cols : (r+1)*a.Cols] }

func dotF32(w []byte, a *Acts, r int) float32 { return dotF32Floats(w, floatRow(a, r)) }

func dotF32Floats(w []byte, x []float32) float32 {
	if !useAVX2 {
		return dotF32Generic(w, x)
	}
	n8 := len(x) &^ 7
	s := float32(0)
	if n8 > 0 {
		s = dotF32AVX2(unsafe.SliceData(w), unsafe.SliceData(x), n8)
	}
	if n8 < len(x) {
		s += dotF32Generic(w[4*n8:], x[n8:])
	}
	return s
}

func dotF16(w []byte, a *Acts, r int) float32 {
	x := floatRow(a, r)
	if !useAVX2 {
		return dotF16Generic(w, x)
	}
	n8 := len(x) &^ 7
	s := float32(0)
	if n8 > 0 {
		s = dotF16AVX2(unsafe.SliceData(w), unsafe.SliceData(x), n8)
	}
	if n8 < len(x) {
		s += dotF16Generic(w[2*n8:], x[n8:])
	}
	return s
}

func dotBF16(w []byte, a *Acts, r int) float32 {
	x := floatRow(a, r)
	if !useAVX2 {
		return dotBF16Generic(w, x)
	}
	n8 := len(x) &^ 7
	s := float32(0)
	if n8 > 0 {
		s = dotBF16AVX2(unsafe.SliceData(w), unsafe.SliceData(x), n8)
	}
	if n8 < len(x) {
		s += dotBF16Generic(w[2*n8:], x[n8:])
	}
	return s
}

func q8Row(a *Acts, r int) ([]int8, []float32) {
	n := a.Cols
	return a.Q[r*n : (r+1)*n], a.D[r*n/32 : (r+1)*n/32]
}

func dotQ8_0(w []byte, a *Acts, r int) float32 {
	q, d := q8Row(a, r)
	if !useAVX2 {
		return dotQ8_0Generic(w, q, d)
	}
	return dotQ8_0AVX2(unsafe.SliceData(w), unsafe.SliceData(q), unsafe.SliceData(d), len(d))
}

func dotQ4_0(w []byte, a *Acts, r int) float32 {
	q, d := q8Row(a, r)
	if !useAVX2 {
		return dotQ4_0Generic(w, q, d)
	}
	return dotQ4_0AVX2(unsafe.SliceData(w), unsafe.SliceData(q), unsafe.SliceData(d), len(d))
}

func dotQ8_0x4(w []byte, a *Acts, r int, out *[4]float32) {
	if !useAVX2 {
		for k := range out {
			out[k] = dotQ8_0(w, a, r+k)
		}
		return
	}
	q, d := q8Row(a, r)
	dotQ8_0x4AVX2(unsafe.SliceData(w), unsafe.SliceData(q), unsafe.SliceData(d), len(d), a.Cols, out)
}

func dotQ4_0x4(w []byte, a *Acts, r int, out *[4]float32) {
	if !useAVX2 {
		for k := range out {
			out[k] = dotQ4_0(w, a, r+k)
		}
		return
	}
	q, d := q8Row(a, r)
	dotQ4_0x4AVX2(unsafe.SliceData(w), unsafe.SliceData(q), unsafe.SliceData(d), len(d), a.Cols, out)
}

//go:noescape
func quantizeQ8_0AVX2(x *float32, q *int8, d *float32, s *int32, nb int)

func quantizeActsQ8_0(q []int8, d []float32, sums []int32, x []float32) {
	if !useAVX2 || len(d) == 0 {
		quantizeActsQ8_0Generic(q, d, sums, x)
		return
	}
	_ = x[32*len(d)-1]
	_ = q[32*len(d)-1]
	_ = sums[len(d)-1]
	quantizeQ8_0AVX2(unsafe.SliceData(x), unsafe.SliceData(q), unsafe.SliceData(d), unsafe.SliceData(sums), len(d))
}

//go:noescape
func axpyAVX2(y *float32, alpha float32, x *float32, n int)

// axpyFast handles the leading multiple of 8 elements and returns it.
func axpyFast(y []float32, alpha float32, x []float32) int {
	n8 := len(y) &^ 7
	if !useAVX2 || n8 == 0 {
		return 0
	}
	axpyAVX2(unsafe.SliceData(y), alpha, unsafe.SliceData(x), n8)
	return n8
}

//go:noescape
func swigluAVX2(gate *float32, up *float32, n int, consts *[12]float32)

// expConsts are swigluAVX2's constants: clamps, log2(e), ln 2 in two
// parts, Cephes' expf polynomial, 1.
var expConsts = [12]float32{
	88.3762626647949, -88.3762626647949, 1.44269504088896341, 0.693359375, -2.12194440e-4,
	1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1, 1,
}

func swigluFast(g, u []float32) int {
	n8 := len(g) &^ 7
	if !useAVX2 || n8 == 0 {
		return 0
	}
	swigluAVX2(unsafe.SliceData(g), unsafe.SliceData(u), n8, &expConsts)
	return n8
}
