package tensor

import "fmt"

// Acts holds activation rows converted to the type a weight's dot product
// consumes (DType.VecDotType): float rows rounded to F16 or BF16 when the
// weights are, or 8-bit quantized rows for quantized weights. Converting once
// per row and reusing it across all weight rows is what makes the quantized
// kernels integer kernels.
//
// Acts owns its buffers and reuses them across Set calls, so a long-lived
// Acts allocates only when it grows.
type Acts struct {
	Type       DType
	Rows, Cols int
	F          []float32 // F32/F16/BF16: Rows*Cols values (rounded to Type)
	Q          []int8    // Q8_0/Q8_K: Rows*Cols quants
	D          []float32 // Q8_0/Q8_K: one scale per block (Q8_0's is f16-rounded)
	Sum        []int32   // Q8_0: the sum of each block's quants; Q8_K: of each run of 16
}

// Set converts rows x (rows*cols, row-major) to type t.
func (a *Acts) Set(t DType, x []float32, rows, cols int) {
	if len(x) < rows*cols {
		panic(fmt.Sprintf("tensor: Acts.Set: %d values for %dx%d", len(x), rows, cols))
	}
	a.Type, a.Rows, a.Cols = t, rows, cols
	n := rows * cols
	switch t {
	case F32:
		a.F = grow(a.F, n)
		copy(a.F, x[:n])
	case F16:
		a.F = grow(a.F, n)
		for i, v := range x[:n] {
			a.F[i] = RoundFP16(v)
		}
	case BF16:
		a.F = grow(a.F, n)
		for i, v := range x[:n] {
			a.F[i] = RoundBF16(v)
		}
	case Q8_0:
		if cols%32 != 0 {
			panic(fmt.Sprintf("tensor: Acts.Set: %d columns is not a multiple of 32", cols))
		}
		// Fewer than 4 rows are padded to 4 with copies of the last one, so
		// the 4-row packed kernels can serve 2 or 3 rows too.
		padded := max(rows, 4) * cols
		a.Q = grow(a.Q, padded)
		a.D = grow(a.D, padded/32)
		a.Sum = grow(a.Sum, padded/32)
		quantizeActsQ8_0(a.Q[:n], a.D[:n/32], a.Sum[:n/32], x[:n])
		for r := rows; r < 4 && rows > 0; r++ {
			copy(a.Q[r*cols:(r+1)*cols], a.Q[(rows-1)*cols:rows*cols])
			copy(a.D[r*cols/32:(r+1)*cols/32], a.D[(rows-1)*cols/32:rows*cols/32])
			copy(a.Sum[r*cols/32:(r+1)*cols/32], a.Sum[(rows-1)*cols/32:rows*cols/32])
		}
	case Q8_K:
		if cols%QK != 0 {
			panic(fmt.Sprintf("tensor: Acts.Set: %d columns is not a multiple of %d", cols, QK))
		}
		a.Q = grow(a.Q, n)
		a.D = grow(a.D, n/QK)
		a.Sum = grow(a.Sum, n/16)
		for b := 0; b < n/QK; b++ {
			a.D[b] = quantizeQ8K(a.Q[b*QK:(b+1)*QK], a.Sum[b*16:(b+1)*16], x[b*QK:(b+1)*QK])
		}
	default:
		panic(fmt.Sprintf("tensor: Acts.Set: %s is not an activation type", t))
	}
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// quantizeQ8_0Ref quantizes one 32-value block the way llama.cpp's AVX2
// path quantizes activations: scale 127/amax, round half to even, and the
// block scale amax/127 stored as f16.
func quantizeQ8_0Ref(q []int8, x []float32) float32 {
	var amax float32
	for _, v := range x[:32] {
		amax = max(amax, abs32(v))
	}
	d := RoundFP16(amax / 127)
	var id float32
	if amax != 0 {
		id = 127 / amax
	}
	for j, v := range x[:32] {
		q[j] = int8(roundHalfEven(v * id))
	}
	return d
}

// quantizeQ8K quantizes one 256-value block as llama.cpp's
// quantize_row_q8_K_ref: the element of largest magnitude maps to -127 and the
// others by nearest-even rounding, capped at 127; sums of 16-element runs are
// kept for the K-quant kernels' min terms.
func quantizeQ8K(q []int8, sums []int32, x []float32) float32 {
	var amax, mx float32
	for _, v := range x[:QK] {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax == 0 {
		clear(q[:QK])
		clear(sums[:16])
		return 0
	}
	iscale := -127 / mx
	for j, v := range x[:QK] {
		q[j] = int8(min(127, int(roundHalfEven(iscale*v))))
	}
	for j := 0; j < 16; j++ {
		var s int32
		for _, v := range q[16*j : 16*j+16] {
			s += int32(v)
		}
		sums[j] = s
	}
	return 1 / iscale
}

func quantizeActsQ8_0Generic(q []int8, d []float32, sums []int32, x []float32) {
	for b := range d {
		blk := q[32*b : 32*b+32]
		d[b] = quantizeQ8_0Ref(blk, x[32*b:32*b+32])
		var s int32
		for _, v := range blk {
			s += int32(v)
		}
		sums[b] = s
	}
}
