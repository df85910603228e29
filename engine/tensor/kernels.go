package tensor

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// kernel is the fast implementation of one weight type's dot products.
type kernel struct {
	// dot returns dot(w, activation row r).
	dot func(w []byte, a *Acts, r int) float32
	// dot4 stores dot(w, activation row r+k) in out[k] for k < 4; nil means
	// the type has no multi-row kernel and dot is called four times.
	dot4 func(w []byte, a *Acts, r int, out *[4]float32)
}

var kernels [BF16 + 1]kernel

func init() {
	kernels[F32] = kernel{dot: dotF32}
	kernels[F16] = kernel{dot: dotF16}
	kernels[BF16] = kernel{dot: dotBF16}
	kernels[Q8_0] = kernel{dot: dotQ8_0, dot4: dotQ8_0x4}
	kernels[Q4_0] = kernel{dot: dotQ4_0, dot4: dotQ4_0x4}
	kernels[Q4_K] = kernel{dot: dotQ4K}
	kernels[Q6_K] = kernel{dot: dotQ6K}
}

func kernelFor(t DType) kernel {
	if int(t) < len(kernels) && kernels[t].dot != nil {
		return kernels[t]
	}
	panic(fmt.Sprintf("tensor: no kernel for %s weights", t))
}

// Dot returns the dot product of weight row w (a.Cols elements of type t)
// with activation row r of a, which must hold t.VecDotType(). It equals
// DotRef up to float rounding.
func Dot(t DType, w []byte, a *Acts, r int) float32 {
	checkDot(t, w, a, r)
	return kernelFor(t).dot(w, a, r)
}

// MatMul computes dst[i*w.Rows+o] = dot(w row o, activation row i) for every
// activation row i < a.Rows and output o < w.Rows, in parallel over output
// rows. a must hold w.Type.VecDotType() with a.Cols == w.Cols.
func MatMul(p *Pool, dst []float32, w *Matrix, a *Acts) {
	checkMatMul(dst, w, a)
	if w.packed != nil {
		matMulPacked(p, dst, w, a)
		return
	}
	k := kernelFor(w.Type)
	n, rows := a.Rows, w.Rows
	// Chunks of about 32 KiB of weights: small enough to balance across
	// threads, large enough that handing them out costs nothing.
	grain := max(1, (32<<10)/w.rowBytes)
	p.For(rows, grain, func(lo, hi int) {
		i := 0
		if k.dot4 != nil {
			var out [4]float32
			for ; i+4 <= n; i += 4 {
				for o := lo; o < hi; o++ {
					k.dot4(w.Row(o), a, i, &out)
					dst[i*rows+o] = out[0]
					dst[(i+1)*rows+o] = out[1]
					dst[(i+2)*rows+o] = out[2]
					dst[(i+3)*rows+o] = out[3]
				}
			}
		}
		for ; i < n; i++ {
			d := dst[i*rows : (i+1)*rows]
			for o := lo; o < hi; o++ {
				d[o] = k.dot(w.Row(o), a, i)
			}
		}
	})
}

// MatVec computes y = W x for one float32 vector x, converting x with the
// scratch a. It is MatMul for a single row.
func MatVec(p *Pool, y []float32, w *Matrix, x []float32, a *Acts) {
	a.Set(w.Type.VecDotType(), x, 1, w.Cols)
	MatMul(p, y, w, a)
}

// Portable K-quant kernels: integer sums per sub-block, one float multiply
// per sub-block.

func dotQ4K(w []byte, a *Acts, r int) float32 {
	n := a.Cols
	q := a.Q[r*n : (r+1)*n]
	ds := a.D[r*n/QK : (r+1)*n/QK]
	sums := a.Sum[r*n/16 : (r+1)*n/16]
	var s float32
	for b, dx := range ds {
		blk := w[b*144 : (b+1)*144 : (b+1)*144]
		dw := FP16ToFP32(binary.LittleEndian.Uint16(blk[0:]))
		dmin := FP16ToFP32(binary.LittleEndian.Uint16(blk[2:]))
		xq := q[b*QK : (b+1)*QK : (b+1)*QK]
		bs := sums[b*16 : (b+1)*16 : (b+1)*16]
		var dots, mins int32
		for g := 0; g < 4; g++ {
			sc0, m0 := q4kScaleMin(2*g, blk[4:16])
			sc1, m1 := q4kScaleMin(2*g+1, blk[4:16])
			qs := blk[16+32*g : 16+32*g+32 : 16+32*g+32]
			lo := xq[64*g : 64*g+32 : 64*g+32]
			hi := xq[64*g+32 : 64*g+64 : 64*g+64]
			var s0, s1 int32
			for l := 0; l < 32; l++ {
				s0 += int32(qs[l]&0xf) * int32(lo[l])
				s1 += int32(qs[l]>>4) * int32(hi[l])
			}
			dots += int32(sc0)*s0 + int32(sc1)*s1
			mins += int32(m0)*(bs[4*g]+bs[4*g+1]) + int32(m1)*(bs[4*g+2]+bs[4*g+3])
		}
		s += dx * (dw*float32(dots) - dmin*float32(mins))
	}
	return s
}

func dotQ6K(w []byte, a *Acts, r int) float32 {
	n := a.Cols
	q := a.Q[r*n : (r+1)*n]
	ds := a.D[r*n/QK : (r+1)*n/QK]
	var s float32
	for b, dx := range ds {
		blk := w[b*210 : (b+1)*210 : (b+1)*210]
		dw := FP16ToFP32(binary.LittleEndian.Uint16(blk[208:]))
		sc := blk[192:208:208]
		xq := q[b*QK : (b+1)*QK : (b+1)*QK]
		var dots int32
		for half := 0; half < 2; half++ {
			ql := blk[64*half : 64*half+64 : 64*half+64]
			qh := blk[128+32*half : 128+32*half+32 : 128+32*half+32]
			x := xq[128*half : 128*half+128 : 128*half+128]
			var acc [8]int32 // per 16-element run
			for l := 0; l < 32; l++ {
				h := qh[l]
				q0 := int32(ql[l]&0xf|(h&3)<<4) - 32
				q1 := int32(ql[l+32]&0xf|((h>>2)&3)<<4) - 32
				q2 := int32(ql[l]>>4|((h>>4)&3)<<4) - 32
				q3 := int32(ql[l+32]>>4|((h>>6)&3)<<4) - 32
				j := l / 16
				acc[j] += q0 * int32(x[l])
				acc[2+j] += q1 * int32(x[l+32])
				acc[4+j] += q2 * int32(x[l+64])
				acc[6+j] += q3 * int32(x[l+96])
			}
			for j := 0; j < 8; j++ {
				dots += int32(int8(sc[8*half+j])) * acc[j]
			}
		}
		s += dx * dw * float32(dots)
	}
	return s
}

// Generic float kernels, used for tails and where there is no SIMD.

func dotF32Generic(w []byte, x []float32) float32 {
	wf := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(w))), len(x))
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += wf[i] * x[i]
		s1 += wf[i+1] * x[i+1]
		s2 += wf[i+2] * x[i+2]
		s3 += wf[i+3] * x[i+3]
	}
	for ; i < len(x); i++ {
		s0 += wf[i] * x[i]
	}
	return s0 + s1 + s2 + s3
}

func dotF16Generic(w []byte, x []float32) float32 {
	var s float32
	for i := range x {
		s += FP16ToFP32(binary.LittleEndian.Uint16(w[2*i:])) * x[i]
	}
	return s
}

func dotBF16Generic(w []byte, x []float32) float32 {
	var s float32
	for i := range x {
		s += BF16ToFP32(binary.LittleEndian.Uint16(w[2*i:])) * x[i]
	}
	return s
}

func dotQ8_0Generic(w []byte, q []int8, d []float32) float32 {
	var s float32
	for b, dx := range d {
		blk := w[34*b : 34*b+34 : 34*b+34]
		xq := q[32*b : 32*b+32 : 32*b+32]
		var sum int32
		for j := 0; j < 32; j++ {
			sum += int32(int8(blk[2+j])) * int32(xq[j])
		}
		s += float32(sum) * (FP16ToFP32(binary.LittleEndian.Uint16(blk)) * dx)
	}
	return s
}

func dotQ4_0Generic(w []byte, q []int8, d []float32) float32 {
	var s float32
	for b, dx := range d {
		blk := w[18*b : 18*b+18 : 18*b+18]
		xq := q[32*b : 32*b+32 : 32*b+32]
		var sum int32
		for j := 0; j < 16; j++ {
			sum += (int32(blk[2+j]&0xf) - 8) * int32(xq[j])
			sum += (int32(blk[2+j]>>4) - 8) * int32(xq[j+16])
		}
		s += float32(sum) * (FP16ToFP32(binary.LittleEndian.Uint16(blk)) * dx)
	}
	return s
}
