package tensor

import (
	"encoding/binary"
)

// Packed layouts. Pack interleaves a matrix in groups of 8 rows so one
// SIMD register holds the same 4 quants of 8 rows: a broadcast activation
// dword then meets all 8 rows in one integer multiply-add, and the 8
// results land in the 8 lanes of one register, ready for the 8 row scales.
// This is what makes decode (one activation row) fast; prefill reuses each
// unpacked weight register for several activation rows.
//
// A "chunk" below is 32 bytes: for row k = 0..7, bytes 4k..4k+3 hold 4
// consecutive bytes of that row's original block. Per group of 8 rows and
// per block, the packed block (the same size as 8 original blocks, or a
// little more for Q4_K) is:
//
//	Q8_0: 8 f16 scales (16 B), 8 chunks of quants: chunk c = quants 4c..4c+3.
//	Q4_0: 8 f16 scales, 4 chunks of nibbles: chunk c = original bytes
//	      4c..4c+3, whose low nibbles are elements 4c..4c+3 and high
//	      nibbles elements 16+4c..16+4c+3.
//	Q4_K: 8 f16 d, 8 f16 dmin, the 8 sub-blocks' 6-bit scales unpacked to
//	      bytes (sub-block j's 8 rows at 32+8j), then their mins (at 96+8j),
//	      then 32 chunks of nibbles: chunk 8g+s = original qs bytes
//	      32g+4s..+3 (low nibbles: elements 64g+4s.., sub-block 2g; high:
//	      64g+32+4s.., sub-block 2g+1). 1184 bytes for 8 blocks of 144.
//	Q6_K: 8 f16 d, the 16 int8 sub-block scales (sub-block j's 8 rows at
//	      16+8j), 32 chunks of ql (chunk 16h+8p+s = ql bytes 64h+32p+4s..),
//	      then 16 chunks of qh (chunk 8h+s = qh bytes 32h+4s..).
//
// Per row the kernels compute each block's exact integer sums of weight ×
// activation quants, then accumulate them in float with the row's scales.
// A row's result depends only on the row and the activation, never on
// which other activation rows share the call.
const packRows = 8

// packFormat describes one type's packed block.
type packFormat struct {
	blockElems int // elements per block (32 or 256)
	bytes      int // packed bytes per group of 8 blocks
	// pack writes the packed block of 8 original blocks src[k] into dst.
	pack func(dst []byte, src [packRows][]byte)
}

var packFormats = map[DType]packFormat{
	Q8_0: {32, 8 * 34, packSimple},
	Q4_0: {32, 8 * 18, packSimple},
	Q4_K: {QK, 1184, packQ4K},
	Q6_K: {QK, 8 * 210, packQ6K},
}

// chunk copies 4 bytes of each row's block, src[k][off:off+4], into the
// 32-byte chunk dst.
func chunk(dst []byte, src [packRows][]byte, off int) {
	for k := range src {
		copy(dst[4*k:4*k+4], src[k][off:off+4])
	}
}

// packSimple packs Q8_0 and Q4_0: scales, then the quant bytes in chunks.
func packSimple(dst []byte, src [packRows][]byte) {
	for k := range src {
		copy(dst[2*k:2*k+2], src[k][:2])
	}
	for c := 0; c < (len(src[0])-2)/4; c++ {
		chunk(dst[16+32*c:], src, 2+4*c)
	}
}

func packQ4K(dst []byte, src [packRows][]byte) {
	for k, b := range src {
		copy(dst[2*k:], b[0:2])    // d
		copy(dst[16+2*k:], b[2:4]) // dmin
		for j := 0; j < 8; j++ {
			dst[32+8*j+k], dst[96+8*j+k] = q4kScaleMin(j, b[4:16])
		}
	}
	for c := 0; c < 32; c++ {
		chunk(dst[160+32*c:], src, 16+4*c)
	}
}

func packQ6K(dst []byte, src [packRows][]byte) {
	for k, b := range src {
		copy(dst[2*k:], b[208:210]) // d
		for j := 0; j < 16; j++ {
			dst[16+8*j+k] = b[192+j]
		}
	}
	for c := 0; c < 32; c++ { // ql
		chunk(dst[144+32*c:], src, 4*c)
	}
	for c := 0; c < 16; c++ { // qh
		chunk(dst[1168+32*c:], src, 128+4*c)
	}
}

// Pack returns a matrix whose rows are interleaved for the packed kernels,
// or m itself when its type has none or it has fewer than 8 rows. Rows past
// the last whole group of 8 are copied in m's layout. The result owns all
// its bytes and does not refer to m's data, so a caller may drop m (or the
// file pages under it). Row works only for the unpacked tail rows of a
// packed matrix.
func Pack(m *Matrix) *Matrix {
	f, ok := packFormats[m.Type]
	if !ok || m.Rows < packRows || packedKernels[m.Type].gemv == nil {
		return m
	}
	groups := m.Rows / packRows
	nb := m.Cols / f.blockElems
	bb := m.Type.BlockBytes()
	packed := make([]byte, groups*nb*f.bytes)
	var src [packRows][]byte
	for g := 0; g < groups; g++ {
		for b := 0; b < nb; b++ {
			for k := range src {
				src[k] = m.Row(g*packRows + k)[b*bb : (b+1)*bb]
			}
			f.pack(packed[(g*nb+b)*f.bytes:(g*nb+b+1)*f.bytes], src)
		}
	}
	pr := groups * packRows
	return &Matrix{Type: m.Type, Rows: m.Rows, Cols: m.Cols, rowBytes: m.rowBytes,
		Data: append([]byte(nil), m.Data[pr*m.rowBytes:]...), packed: packed, packedRows: pr}
}

// ConvertPack returns m converted to type to and packed, in one pass: rows
// are converted 8 at a time into scratch and packed from there, so no
// unpacked copy of the converted matrix ever exists. Types without a packed
// layout (and matrices of fewer than 8 rows) come back converted only. Rows
// of m must hold whole blocks of to.
func ConvertPack(m *Matrix, to DType, pool *Pool) (*Matrix, error) {
	rb, err := to.RowBytes(m.Cols)
	if err != nil {
		return nil, err
	}
	// Per-thread scratch, allocated once per call: a float row and, for
	// packing, 8 converted rows.
	rows := make([][]float32, pool.Threads())
	scratch := make([][]byte, pool.Threads())
	rowOf := func(worker int) []float32 {
		if rows[worker] == nil {
			rows[worker] = make([]float32, m.Cols)
		}
		return rows[worker]
	}
	convertRows := func(dst []byte, lo, hi int, row []float32) {
		for r := lo; r < hi; r++ {
			Dequantize(row, m.Row(r), m.Type, m.Cols)
			Quantize(dst[(r-lo)*rb:(r-lo+1)*rb], row, to, m.Cols)
		}
	}
	f, ok := packFormats[to]
	if !ok || m.Rows < packRows || packedKernels[to].gemv == nil {
		out := make([]byte, m.Rows*rb)
		pool.ForWorker(m.Rows, 16, func(w, lo, hi int) { convertRows(out[lo*rb:], lo, hi, rowOf(w)) })
		return NewMatrix(to, m.Rows, m.Cols, out)
	}
	groups := m.Rows / packRows
	nb := m.Cols / f.blockElems
	bb := to.BlockBytes()
	packed := make([]byte, groups*nb*f.bytes)
	pool.ForWorker(groups, 1, func(w, lo, hi int) {
		if scratch[w] == nil {
			scratch[w] = make([]byte, packRows*rb)
		}
		var src [packRows][]byte
		for g := lo; g < hi; g++ {
			convertRows(scratch[w], g*packRows, (g+1)*packRows, rowOf(w))
			for b := 0; b < nb; b++ {
				for k := range src {
					src[k] = scratch[w][k*rb+b*bb : k*rb+(b+1)*bb]
				}
				f.pack(packed[(g*nb+b)*f.bytes:(g*nb+b+1)*f.bytes], src)
			}
		}
	})
	pr := groups * packRows
	tail := make([]byte, (m.Rows-pr)*rb)
	convertRows(tail, pr, m.Rows, rowOf(0))
	return &Matrix{Type: to, Rows: m.Rows, Cols: m.Cols, rowBytes: rb, Data: tail, packed: packed, packedRows: pr}, nil
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
	// gemm8, where there is one, is gemm4 for eight rows, loading each weight chunk once
	// for all of them.
	gemm8 func(w []byte, a *Acts, r int, y []float32, ystride int)
	// fused reports that gemm4 unpacks each weight block once for all four
	// rows, so it beats four gemv calls even when some of its rows are
	// spare.
	fused bool
}

var packedKernels [Q6_K + 1]packedKernel

// matMulPacked is MatMul for a packed matrix.
func matMulPacked(p *Pool, dst []float32, w *Matrix, a *Acts) {
	k := packedKernels[w.Type]
	n, rows := a.Rows, w.Rows
	groups := w.packedRows / packRows
	p.For(groups, 4, func(lo, hi int) {
		var tmp [8 * packRows]float32
		for g := lo; g < hi; g++ {
			wg := w.packedGroup(g)
			i := 0
			if k.gemm8 != nil {
				for ; i+8 <= n; i += 8 {
					k.gemm8(wg, a, i, tmp[:], packRows)
					for j := 0; j < 8; j++ {
						copy(dst[(i+j)*rows+g*packRows:(i+j)*rows+(g+1)*packRows], tmp[j*packRows:(j+1)*packRows])
					}
				}
			}
			for ; i+4 <= n; i += 4 {
				k.gemm4(wg, a, i, tmp[:], packRows)
				for j := 0; j < 4; j++ {
					copy(dst[(i+j)*rows+g*packRows:(i+j)*rows+(g+1)*packRows], tmp[j*packRows:(j+1)*packRows])
				}
			}
			if rem := n - i; k.fused && rem >= 2 && len(a.Q) >= 4*a.Cols {
				// Two or three rows left: one 4-row pass over the last four
				// rows (or the padding rows of a short batch) costs less than
				// two or three 1-row passes. A row's result is the same from
				// either kernel, so rows computed twice agree.
				r0 := max(0, n-4)
				k.gemm4(wg, a, r0, tmp[:], packRows)
				for r := i; r < n; r++ {
					copy(dst[r*rows+g*packRows:r*rows+(g+1)*packRows], tmp[(r-r0)*packRows:(r-r0+1)*packRows])
				}
				i = n
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

// Portable packed kernels: the same integer sums as the assembly ones.

func gemvPackedGeneric(t DType, w []byte, a *Acts, r int, y []float32) {
	switch t {
	case Q4_K:
		gemvQ4KGeneric(w, a, r, y)
		return
	case Q6_K:
		gemvQ6KGeneric(w, a, r, y)
		return
	}
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

func gemvQ4KGeneric(w []byte, a *Acts, r int, y []float32) {
	nb := a.Cols / QK
	q := a.Q[r*a.Cols : (r+1)*a.Cols]
	d := a.D[r*nb : (r+1)*nb]
	sums := a.Sum[r*a.Cols/16 : (r+1)*a.Cols/16]
	var acc [packRows]float32
	for b := 0; b < nb; b++ {
		blk := w[b*1184 : (b+1)*1184]
		x := q[QK*b : QK*b+QK]
		for k := 0; k < packRows; k++ {
			var dots, mins int32
			for j := 0; j < 8; j++ {
				g, hi := j/2, j%2
				var s int32
				for st := 0; st < 8; st++ {
					for i := 0; i < 4; i++ {
						v := blk[160+32*(8*g+st)+4*k+i]
						if hi == 1 {
							v >>= 4
						}
						s += int32(v&0xf) * int32(x[64*g+32*hi+4*st+i])
					}
				}
				dots += int32(blk[32+8*j+k]) * s
				mins += int32(blk[96+8*j+k]) * (sums[16*b+2*j] + sums[16*b+2*j+1])
			}
			dk := FP16ToFP32(binary.LittleEndian.Uint16(blk[2*k:]))
			dmin := FP16ToFP32(binary.LittleEndian.Uint16(blk[16+2*k:]))
			acc[k] += d[b] * (dk*float32(dots) - dmin*float32(mins))
		}
	}
	copy(y[:packRows], acc[:])
}

func gemvQ6KGeneric(w []byte, a *Acts, r int, y []float32) {
	nb := a.Cols / QK
	q := a.Q[r*a.Cols : (r+1)*a.Cols]
	d := a.D[r*nb : (r+1)*nb]
	var acc [packRows]float32
	for b := 0; b < nb; b++ {
		blk := w[b*1680 : (b+1)*1680]
		x := q[QK*b : QK*b+QK]
		for k := 0; k < packRows; k++ {
			var dots int32
			for h := 0; h < 2; h++ {
				for kk := 0; kk < 4; kk++ {
					for sb := 0; sb < 2; sb++ {
						var s int32
						for st := 4 * sb; st < 4*sb+4; st++ {
							for i := 0; i < 4; i++ {
								ql := blk[144+32*(16*h+8*(kk&1)+st)+4*k+i]
								if kk >= 2 {
									ql >>= 4
								}
								qh := blk[1168+32*(8*h+st)+4*k+i] >> (2 * kk)
								v := int32(ql&0xf) | int32(qh&3)<<4
								s += (v - 32) * int32(x[128*h+32*kk+4*st+i])
							}
						}
						dots += int32(int8(blk[16+8*(8*h+2*kk+sb)+k])) * s
					}
				}
			}
			acc[k] += d[b] * FP16ToFP32(binary.LittleEndian.Uint16(blk[2*k:])) * float32(dots)
		}
	}
	copy(y[:packRows], acc[:])
}

func init() { useGenericPacked() }

func useGenericPacked() {
	for _, t := range []DType{Q8_0, Q4_0, Q4_K, Q6_K} {
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
