package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Block layouts (little-endian, as in GGUF files):
//
//	Q8_0: f16 d, int8 q[32]                       x = q*d
//	Q4_0: f16 d, uint8 qs[16]                     x = (nibble-8)*d; element j<16 is the
//	                                              low nibble of qs[j], element j+16 its high nibble
//	Q4_K: f16 d, f16 dmin, uint8 scales[12],      256 values in 8 sub-blocks of 32, each with a
//	      uint8 qs[128]                           6-bit scale sc and min m: x = d*sc*q - dmin*m
//	Q6_K: uint8 ql[128], uint8 qh[64],            256 values in 16 sub-blocks of 16 with int8
//	      int8 scales[16], f16 d                  scales: x = d*sc*(q-32), q 6 bits
//	Q8_K: f32 d, int8 q[256], int16 bsums[16]     activations only (never stored in files)

// Dequantize expands n elements of type t from src into dst[:n]. n must be a
// multiple of t's block size and src must hold exactly those blocks.
func Dequantize(dst []float32, src []byte, t DType, n int) {
	mustRow(t, src, n)
	switch t {
	case F32:
		for i := 0; i < n; i++ {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := 0; i < n; i++ {
			dst[i] = FP16ToFP32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case BF16:
		for i := 0; i < n; i++ {
			dst[i] = BF16ToFP32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case Q8_0:
		for b := 0; b < n/32; b++ {
			blk := src[b*34 : b*34+34]
			d := FP16ToFP32(binary.LittleEndian.Uint16(blk))
			for j := 0; j < 32; j++ {
				dst[b*32+j] = float32(int8(blk[2+j])) * d
			}
		}
	case Q4_0:
		for b := 0; b < n/32; b++ {
			blk := src[b*18 : b*18+18]
			d := FP16ToFP32(binary.LittleEndian.Uint16(blk))
			for j := 0; j < 16; j++ {
				dst[b*32+j] = float32(int(blk[2+j]&0xf)-8) * d
				dst[b*32+j+16] = float32(int(blk[2+j]>>4)-8) * d
			}
		}
	case Q4_K:
		for b := 0; b < n/QK; b++ {
			dequantQ4K(dst[b*QK:(b+1)*QK], src[b*144:(b+1)*144])
		}
	case Q6_K:
		for b := 0; b < n/QK; b++ {
			dequantQ6K(dst[b*QK:(b+1)*QK], src[b*210:(b+1)*210])
		}
	default:
		panic(fmt.Sprintf("tensor: Dequantize: no kernel for %s", t))
	}
}

// q4kScaleMin unpacks the 6-bit scale and min of sub-block j (0..7) from the
// 12 packed bytes of a Q4_K block: sub-blocks 0-3 keep their low 6 bits in
// bytes j and j+4; sub-blocks 4-7 keep 4 bits in byte j+4 and their top two
// bits in the spare top bits of bytes j-4 and j.
func q4kScaleMin(j int, s []byte) (sc, m uint8) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	sc = s[j+4]&0xf | (s[j-4]>>6)<<4
	m = s[j+4]>>4 | (s[j]>>6)<<4
	return sc, m
}

func dequantQ4K(dst []float32, blk []byte) {
	d := FP16ToFP32(binary.LittleEndian.Uint16(blk[0:]))
	dmin := FP16ToFP32(binary.LittleEndian.Uint16(blk[2:]))
	scales := blk[4:16]
	qs := blk[16:144]
	for g := 0; g < 4; g++ { // 64 values per group: low nibbles then high nibbles of 32 bytes
		sc0, m0 := q4kScaleMin(2*g, scales)
		sc1, m1 := q4kScaleMin(2*g+1, scales)
		d0, mn0 := d*float32(sc0), dmin*float32(m0)
		d1, mn1 := d*float32(sc1), dmin*float32(m1)
		q := qs[32*g : 32*g+32]
		for l := 0; l < 32; l++ {
			dst[64*g+l] = d0*float32(q[l]&0xf) - mn0
			dst[64*g+32+l] = d1*float32(q[l]>>4) - mn1
		}
	}
}

// q6kScaleIndex returns the sub-block scale index of element i (0..255) of
// a Q6_K block. Elements come in two halves of 128; within a half, element
// l+32*k (l<32, k<4) uses scale 8*half + 2*k + l/16.
func q6kScaleIndex(i int) int {
	half, r := i/128, i%128
	return 8*half + 2*(r/32) + (r%32)/16
}

// q6kValue returns the 6-bit quant (0..63) of element i of a Q6_K block.
// Element l+32*k of a half takes its low 4 bits from ql[l + 32*(k&1)] (the
// low nibble for k<2, the high nibble otherwise) and its top two bits from
// bits 2k..2k+1 of qh[l].
func q6kValue(blk []byte, i int) int {
	half, r := i/128, i%128
	k, l := r/32, r%32
	lo := blk[64*half+l+32*(k&1)]
	if k >= 2 {
		lo >>= 4
	}
	return int(lo&0xf) | int((blk[128+32*half+l]>>(2*k))&3)<<4
}

func dequantQ6K(dst []float32, blk []byte) {
	d := FP16ToFP32(binary.LittleEndian.Uint16(blk[208:]))
	scales := blk[192:208]
	for i := 0; i < QK; i++ {
		dst[i] = d * float32(int8(scales[q6kScaleIndex(i)])) * float32(q6kValue(blk, i)-32)
	}
}

// Quantize packs n floats from src into dst in type t, as a model file
// stores weights. n must be a multiple of t's block size and dst exactly
// the size of those blocks. Q8_0 and Q4_0 use llama.cpp's reference
// rounding, so files written here equal llama-quantize's for those types;
// the K-quants use this package's own scale search.
func Quantize(dst []byte, src []float32, t DType, n int) {
	mustRow(t, dst, n)
	switch t {
	case F32:
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(src[i]))
		}
	case F16:
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint16(dst[2*i:], FP32ToFP16(src[i]))
		}
	case BF16:
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint16(dst[2*i:], FP32ToBF16(src[i]))
		}
	case Q8_0:
		for b := 0; b < n/32; b++ {
			quantQ8_0(dst[b*34:b*34+34], src[b*32:b*32+32])
		}
	case Q4_0:
		for b := 0; b < n/32; b++ {
			quantQ4_0(dst[b*18:b*18+18], src[b*32:b*32+32])
		}
	case Q4_K:
		for b := 0; b < n/QK; b++ {
			quantQ4K(dst[b*144:(b+1)*144], src[b*QK:(b+1)*QK])
		}
	case Q6_K:
		for b := 0; b < n/QK; b++ {
			quantQ6K(dst[b*210:(b+1)*210], src[b*QK:(b+1)*QK])
		}
	default:
		panic(fmt.Sprintf("tensor: Quantize: no quantizer for %s", t))
	}
}

func mustRow(t DType, buf []byte, n int) {
	want, err := t.RowBytes(n)
	if err != nil {
		panic(err)
	}
	if len(buf) < want {
		panic(fmt.Sprintf("tensor: %d elements of %s need %d bytes, have %d", n, t, want, len(buf)))
	}
}

// roundHalfAway is C's roundf. Adding ±0.5 in float64 is exact for any
// float32, so truncating the sum rounds halves away from zero (in float32,
// 0.49999997+0.5 would round up to 1); it is much cheaper than math.Round.
func roundHalfAway(x float32) float32 { return float32(roundHalfAwayInt(x)) }

// roundHalfAwayInt is roundHalfAway as an integer, for |x| < 2^31.
func roundHalfAwayInt(x float32) int32 {
	f := float64(x)
	return int32(f + math.Copysign(0.5, f))
}

// roundHalfEven is what SIMD rounding and llama.cpp's nearest_int do.
func roundHalfEven(x float32) float32 { return float32(math.RoundToEven(float64(x))) }

func quantQ8_0(dst []byte, x []float32) {
	x, dst = x[:32], dst[:34]
	var amax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax = a
		}
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(dst, FP32ToFP16(d))
	q := dst[2:34]
	for j, v := range x {
		q[j] = byte(int8(roundHalfAwayInt(v * id)))
	}
}

func quantQ4_0(dst []byte, x []float32) {
	var amax, mx float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	d := mx / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(dst, FP32ToFP16(d))
	for j := 0; j < 16; j++ {
		q0 := min(15, int8(x[j]*id+8.5))
		q1 := min(15, int8(x[j+16]*id+8.5))
		dst[2+j] = byte(q0) | byte(q1)<<4
	}
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// fitAffine finds scale s >= 0 and offset m <= 0 minimising
// sum (x_i - (s*q_i + m))^2 over levels q_i in [0, nmax], by trying a fan of
// grid spacings around the plain min/max one and refitting s and m by least
// squares for each candidate assignment (the error of a fit follows from
// the same sums, so each candidate is one pass). It returns s and -m (the
// positive min Q4_K stores).
func fitAffine(x []float32, nmax int) (scale, negMin float32) {
	lo, hi := float32(0), x[0]
	var sx, sxx float64
	for _, v := range x {
		lo = min(lo, v)
		hi = max(hi, v)
		sx += float64(v)
		sxx += float64(v) * float64(v)
	}
	if hi <= lo {
		return 0, -lo
	}
	n := float64(len(x))
	bestErr := math.Inf(1)
	scale, negMin = (hi-lo)/float32(nmax), -lo
	fmax := float32(nmax)
	for step := -10; step <= 10; step += 2 {
		iscale := (fmax + 0.1*float32(step)) / (hi - lo)
		var sl, sll, slx float64
		for _, v := range x {
			// v-lo >= 0, so adding a half and truncating rounds to nearest.
			l := min(float32(int32(iscale*(v-lo)+0.5)), fmax)
			sl += float64(l)
			sll += float64(l) * float64(l)
			slx += float64(l) * float64(v)
		}
		det := n*sll - sl*sl
		if det <= 0 {
			continue
		}
		s := (n*slx - sl*sx) / det
		m := (sx - s*sl) / n
		if m > 0 { // the format needs m <= 0: refit the scale alone
			m = 0
			s = slx / sll
		}
		if s <= 0 {
			continue
		}
		// sum (x - s l - m)^2 expanded in the sums above; levels are those of
		// this grid (close to, not exactly, the ones the fit would choose).
		err := sxx - 2*s*slx - 2*m*sx + s*s*sll + 2*s*m*sl + n*m*m
		if err < bestErr {
			bestErr, scale, negMin = err, float32(s), float32(-m)
		}
	}
	return scale, negMin
}

func clampInt(v, lo, hi int) int { return min(max(v, lo), hi) }

func quantQ4K(dst []byte, x []float32) {
	var scales, mins [8]float32
	var maxScale, maxMin float32
	for j := 0; j < 8; j++ {
		scales[j], mins[j] = fitAffine(x[32*j:32*j+32], 15)
		maxScale = max(maxScale, scales[j])
		maxMin = max(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	packed := dst[4:16]
	clear(packed)
	for j := 0; j < 8; j++ {
		ls := uint8(clampInt(int(roundHalfEven(invScale*scales[j])), 0, 63))
		lm := uint8(clampInt(int(roundHalfEven(invMin*mins[j])), 0, 63))
		if j < 4 {
			packed[j] = ls
			packed[j+4] = lm
		} else {
			packed[j+4] = ls&0xf | (lm&0xf)<<4
			packed[j-4] |= (ls >> 4) << 6
			packed[j] |= (lm >> 4) << 6
		}
	}
	d := FP32ToFP16(maxScale / 63)
	dmin := FP32ToFP16(maxMin / 63)
	binary.LittleEndian.PutUint16(dst[0:], d)
	binary.LittleEndian.PutUint16(dst[2:], dmin)
	df, dminf := FP16ToFP32(d), FP16ToFP32(dmin)
	var levels [QK]uint8
	for j := 0; j < 8; j++ {
		sc, m := q4kScaleMin(j, packed)
		ds := df * float32(sc)
		if ds == 0 {
			continue
		}
		dm := dminf * float32(m)
		for i := 32 * j; i < 32*j+32; i++ {
			levels[i] = uint8(clampInt(int(roundHalfEven((x[i]+dm)/ds)), 0, 15))
		}
	}
	qs := dst[16:144]
	for g := 0; g < 4; g++ {
		for l := 0; l < 32; l++ {
			qs[32*g+l] = levels[64*g+l] | levels[64*g+32+l]<<4
		}
	}
}

func quantQ6K(dst []byte, x []float32) {
	// Per 16-element sub-block, a signed scale that maps the element of
	// largest magnitude to -32 (the format's one-sided extreme), then int8
	// scales relative to the super-block's d.
	var sub [16]float32
	var amaxSub, maxSub float32
	for j := 0; j < 16; j++ {
		var amax, mx float32
		for _, v := range x[16*j : 16*j+16] {
			if a := abs32(v); a > amax {
				amax, mx = a, v
			}
		}
		sub[j] = mx / -32
		if a := abs32(sub[j]); a > amaxSub {
			amaxSub, maxSub = a, sub[j]
		}
	}
	clear(dst)
	if amaxSub == 0 {
		return
	}
	iscale := -128 / maxSub
	d := FP32ToFP16(1 / iscale)
	binary.LittleEndian.PutUint16(dst[208:], d)
	df := FP16ToFP32(d)
	scales := dst[192:208]
	for j := 0; j < 16; j++ {
		scales[j] = byte(int8(clampInt(int(roundHalfEven(iscale*sub[j])), -128, 127)))
	}
	for i := 0; i < QK; i++ {
		s := df * float32(int8(scales[q6kScaleIndex(i)]))
		q := 32
		if s != 0 {
			q = clampInt(int(roundHalfEven(x[i]/s)), -32, 31) + 32
		}
		half, r := i/128, i%128
		k, l := r/32, r%32
		lo := &dst[64*half+l+32*(k&1)]
		if k >= 2 {
			*lo |= byte(q&0xf) << 4
		} else {
			*lo |= byte(q & 0xf)
		}
		dst[128+32*half+l] |= byte(q>>4) << (2 * k)
	}
}
