package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DotRef returns the dot product of weight row w (a.Cols elements of type
// t) with activation row r of a, which must hold t.VecDotType(). It is the
// plain reference for Dot: blocks are decoded one value at a time and
// accumulated in float64.
func DotRef(t DType, w []byte, a *Acts, r int) float32 {
	checkDot(t, w, a, r)
	n := a.Cols
	switch t {
	case F32, F16, BF16:
		x := a.F[r*n : (r+1)*n]
		tmp := make([]float32, n)
		Dequantize(tmp, w, t, n)
		var s float64
		for i := range x {
			s += float64(tmp[i]) * float64(x[i])
		}
		return float32(s)
	case Q8_0, Q4_0:
		q := a.Q[r*n : (r+1)*n]
		d := a.D[r*n/32 : (r+1)*n/32]
		bb := t.BlockBytes()
		var s float64
		for b := range d {
			blk := w[b*bb : (b+1)*bb]
			dw := FP16ToFP32(binary.LittleEndian.Uint16(blk))
			var sum int32
			for j := 0; j < 32; j++ {
				var wq int32
				if t == Q8_0 {
					wq = int32(int8(blk[2+j]))
				} else if j < 16 {
					wq = int32(blk[2+j]&0xf) - 8
				} else {
					wq = int32(blk[2+j-16]>>4) - 8
				}
				sum += wq * int32(q[32*b+j])
			}
			s += float64(dw) * float64(d[b]) * float64(sum)
		}
		return float32(s)
	case Q4_K:
		q := a.Q[r*n : (r+1)*n]
		d := a.D[r*n/QK : (r+1)*n/QK]
		var s float64
		for b := range d {
			blk := w[b*144 : (b+1)*144]
			dw := float64(FP16ToFP32(binary.LittleEndian.Uint16(blk[0:])))
			dmin := float64(FP16ToFP32(binary.LittleEndian.Uint16(blk[2:])))
			var dots, mins int64
			for j := 0; j < 8; j++ {
				sc, m := q4kScaleMin(j, blk[4:16])
				var sum, xsum int64
				for l := 0; l < 32; l++ {
					i := 32*j + l
					g, off := i/64, i%64
					nib := blk[16+32*g+off%32]
					if off >= 32 {
						nib >>= 4
					}
					xq := int64(q[QK*b+i])
					sum += int64(nib&0xf) * xq
					xsum += xq
				}
				dots += int64(sc) * sum
				mins += int64(m) * xsum
			}
			s += float64(d[b]) * (dw*float64(dots) - dmin*float64(mins))
		}
		return float32(s)
	case Q6_K:
		q := a.Q[r*n : (r+1)*n]
		d := a.D[r*n/QK : (r+1)*n/QK]
		var s float64
		for b := range d {
			blk := w[b*210 : (b+1)*210]
			dw := float64(FP16ToFP32(binary.LittleEndian.Uint16(blk[208:])))
			var dots int64
			for i := 0; i < QK; i++ {
				sc := int64(int8(blk[192+q6kScaleIndex(i)]))
				dots += sc * int64(q6kValue(blk, i)-32) * int64(q[QK*b+i])
			}
			s += float64(d[b]) * dw * float64(dots)
		}
		return float32(s)
	}
	panic(fmt.Sprintf("tensor: DotRef: no kernel for %s", t))
}

func checkDot(t DType, w []byte, a *Acts, r int) {
	if a.Type != t.VecDotType() {
		panic(fmt.Sprintf("tensor: dot of %s weights needs %s activations, have %s", t, t.VecDotType(), a.Type))
	}
	if r < 0 || r >= a.Rows {
		panic(fmt.Sprintf("tensor: activation row %d out of range [0,%d)", r, a.Rows))
	}
	mustRow(t, w, a.Cols)
}

// MatMulRef is the reference for MatMul: dst[i*w.Rows+o] = DotRef(row o, act i).
func MatMulRef(dst []float32, w *Matrix, a *Acts) {
	checkMatMul(dst, w, a)
	for i := 0; i < a.Rows; i++ {
		for o := 0; o < w.Rows; o++ {
			dst[i*w.Rows+o] = DotRef(w.Type, w.Row(o), a, i)
		}
	}
}

// relErr is |got-want| / max(1, |want|): tests of kernels use it.
func relErr(got, want float32) float64 {
	return math.Abs(float64(got)-float64(want)) / math.Max(1, math.Abs(float64(want)))
}
