package tensor

import (
	"encoding/binary"
)

// Packed layouts. Pack interleaves a Q8_0 or Q4_0 matrix in groups of 8
// rows so one SIMD register holds the same 4 quants of 8 rows: a broadcast
// activation dword then meets all 8 rows in one integer multiply-add, and
// the 8 results land in the 8 lanes of one register, ready for the 8 row
// scales. This is what makes decode (one activation row) fast; prefill
// reuses each unpacked weight register for 4 activation rows.
//
// For each group of 8 rows and each 32-element block b, the packed block is
//
//	8 × f16 row scales (16 bytes), then chunks of 32 bytes: chunk c holds,
//	for row k = 0..7 at bytes 4k..4k+3, that row's original block bytes
//	2+4c .. 2+4c+3
//
// Q8_0 has 8 chunks (the quants 4c..4c+3). Q4_0 has 4 chunks; their low
// nibbles are elements 4c..4c+3 and their high nibbles elements
// 16+4c..16+4c+3. A packed block has the same size as 8 original ones.
//
// Per row the kernels compute, per block, the exact integer sum of
// weight × activation quants, then accumulate float(sum) · d_row · d_x.
// A row's result depends only on the row and the activation, never on
// which other activation rows share the call.
const packRows = 8

// packable reports whether Pack supports type t.
func packable(t DType) bool { return t == Q8_0 || t == Q4_0 }

// Pack returns a matrix whose rows are interleaved for the packed kernels,
// or m itself when its type has none or it has fewer than 8 rows. Rows past
// the last whole group of 8 are copied in m's layout. The result owns all
// its bytes and does not refer to m's data, so a caller may drop m (or the
// file pages under it). Row works only for the unpacked tail rows of a
// packed matrix.
func Pack(m *Matrix) *Matrix {
	if !packable(m.Type) || m.Rows < packRows {
		return m
	}
	groups := m.Rows / packRows
	nb := m.Cols / 32
	bb := m.Type.BlockBytes()
	chunks := (bb - 2) / 4
	packed := make([]byte, groups*nb*packRows*bb)
	for g := 0; g < groups; g++ {
		for b := 0; b < nb; b++ {
			dst := packed[(g*nb+b)*packRows*bb : (g*nb+b+1)*packRows*bb]
			for k := 0; k < packRows; k++ {
				src := m.Row(g*packRows + k)[b*bb : (b+1)*bb]
				copy(dst[2*k:2*k+2], src[:2])
				for c := 0; c < chunks; c++ {
					copy(dst[16+32*c+4*k:16+32*c+4*k+4], src[2+4*c:2+4*c+4])
				}
			}
		}
	}
	pr := groups * packRows
	return &Matrix{Type: m.Type, Rows: m.Rows, Cols: m.Cols, rowBytes: m.rowBytes,
		Data: append([]byte(nil), m.Data[pr*m.rowBytes:]...), packed: packed, packedRows: pr}
}

// Packed reports whether the matrix has a packed layout.
func (m *Matrix) Packed() bool { return m.packed != nil }

// packedGroup returns the packed bytes of row group g.
func (m *Matrix) packedGroup(g int) []byte {
	n := len(m.packed) / (m.packedRows / packRows)
	return m.packed[g*n : (g+1)*n]
}

// packedKernel computes a group of 8 rows against activation rows.
type packedKernel struct {
	// gemv sets y[k] = dot(row k of the group, activation row r), k < 8.
	gemv func(w []byte, a *Acts, r int, y []float32)
	// gemm4 sets y[i*ystride+k] for activation rows r+i, i < 4.
	gemm4 func(w []byte, a *Acts, r int, y []float32, ystride int)
}

var packedKernels [Q8_0 + 1]packedKernel

// matMulPacked is MatMul for a packed matrix.
func matMulPacked(p *Pool, dst []float32, w *Matrix, a *Acts) {
	k := packedKernels[w.Type]
	n, rows := a.Rows, w.Rows
	groups := w.packedRows / packRows
	p.For(groups, 4, func(lo, hi int) {
		var tmp [4 * packRows]float32
		for g := lo; g < hi; g++ {
			wg := w.packedGroup(g)
			i := 0
			for ; i+4 <= n; i += 4 {
				k.gemm4(wg, a, i, tmp[:], packRows)
				for j := 0; j < 4; j++ {
					copy(dst[(i+j)*rows+g*packRows:(i+j)*rows+(g+1)*packRows], tmp[j*packRows:(j+1)*packRows])
				}
			}
			for ; i < n; i++ {
				k.gemv(wg, a, i, dst[i*rows+g*packRows:i*rows+(g+1)*packRows])
			}
		}
	})
	if w.packedRows < rows {
		kern := kernelFor(w.Type)
		for i := 0; i < n; i++ {
			for o := w.packedRows; o < rows; o++ {
				dst[i*rows+o] = kern.dot(w.Row(o), a, i)
			}
		}
	}
}

// Portable packed kernels: the same integer sums and float accumulation
// as the assembly ones.

func gemvPackedGeneric(t DType, w []byte, a *Acts, r int, y []float32) {
	nb := a.Cols / 32
	bb := t.BlockBytes()
	q := a.Q[r*a.Cols : (r+1)*a.Cols]
	d := a.D[r*nb : (r+1)*nb]
	var acc [packRows]float32
	for b := 0; b < nb; b++ {
		blk := w[b*packRows*bb : (b+1)*packRows*bb]
		x := q[32*b : 32*b+32]
		for k := 0; k < packRows; k++ {
			var sum int32
			if t == Q8_0 {
				for c := 0; c < 8; c++ {
					for i := 0; i < 4; i++ {
						sum += int32(int8(blk[16+32*c+4*k+i])) * int32(x[4*c+i])
					}
				}
			} else {
				for c := 0; c < 4; c++ {
					for i := 0; i < 4; i++ {
						v := blk[16+32*c+4*k+i]
						sum += (int32(v&0xf) - 8) * int32(x[4*c+i])
						sum += (int32(v>>4) - 8) * int32(x[16+4*c+i])
					}
				}
			}
			scale := FP16ToFP32(binary.LittleEndian.Uint16(blk[2*k:])) * d[b]
			acc[k] += float32(sum) * scale
		}
	}
	copy(y[:packRows], acc[:])
}

func init() { useGenericPacked() }

func useGenericPacked() {
	for _, t := range []DType{Q8_0, Q4_0} {
		packedKernels[t] = packedKernel{
			gemv: func(w []byte, a *Acts, r int, y []float32) { gemvPackedGeneric(t, w, a, r, y) },
			gemm4: func(w []byte, a *Acts, r int, y []float32, ystride int) {
				for i := 0; i < 4; i++ {
					gemvPackedGeneric(t, w, a, r+i, y[i*ystride:])
				}
			},
		}
	}
}
