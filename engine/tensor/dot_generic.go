//go:build !amd64 || purego

package tensor

func floatRow(a *Acts, r int) []float32 { return a.F[r*a.Cols : (r+1)*a.Cols] }

func q8Row(a *Acts, r int) ([]int8, []float32) {
	n := a.Cols
	return a.Q[r*n : (r+1)*n], a.D[r*n/32 : (r+1)*n/32]
}

func dotF32(w []byte, a *Acts, r int) float32    { return dotF32Generic(w, floatRow(a, r)) }
func dotF32Floats(w []byte, x []float32) float32 { return dotF32Generic(w, x) }
func dotF16(w []byte, a *Acts, r int) float32    { return dotF16Generic(w, floatRow(a, r)) }
func dotBF16(w []byte, a *Acts, r int) float32   { return dotBF16Generic(w, floatRow(a, r)) }

func dotQ8_0(w []byte, a *Acts, r int) float32 {
	q, d := q8Row(a, r)
	return dotQ8_0Generic(w, q, d)
}

func dotQ4_0(w []byte, a *Acts, r int) float32 {
	q, d := q8Row(a, r)
	return dotQ4_0Generic(w, q, d)
}

func dotQ8_0x4(w []byte, a *Acts, r int, out *[4]float32) {
	for k := range out {
		out[k] = dotQ8_0(w, a, r+k)
	}
}

func dotQ4_0x4(w []byte, a *Acts, r int, out *[4]float32) {
	for k := range out {
		out[k] = dotQ4_0(w, a, r+k)
	}
}

func quantizeActsQ8_0(q []int8, d []float32, sums []int32, x []float32) {
	quantizeActsQ8_0Generic(q, d, sums, x)
}

func axpyFast([]float32, float32, []float32) int { return 0 }

func swigluFast([]float32, []float32) int { return 0 }
