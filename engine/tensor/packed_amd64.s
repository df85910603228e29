//go:build amd64 && !purego

#include "textflag.h"

// Packed (8-row interleaved) kernels; see packed.go for the layout. Each
// 32-byte chunk holds 4 quants of each of 8 rows, one row per dword lane, so
// a broadcast activation dword meets all 8 rows at once and lane k ends up
// holding row k's integer block sum.
//
// Registers in the gemm4 kernels: Y0-Y3 float accumulators and Y4-Y7
// integer block accumulators of activation rows 0-3; activation row i is at
// DI + i*R9 (rows 2, 3 through R10), its scales at DX + i*R11 (R12) and its
// block sums at R8 + i*R11 (R13).

#define NIBBLE_MASK_Y14 \
	MOVL $0x0f0f0f0f, AX \
	VMOVD AX, X14 \
	VPBROADCASTD X14, Y14

#define ONES16_Y15 \
	MOVL $0x00010001, AX \
	VMOVD AX, X15 \
	VPBROADCASTD X15, Y15

#define BIAS128_Y13 \
	MOVL $0x80808080, AX \
	VMOVD AX, X13 \
	VPBROADCASTD X13, Y13

// ireg = broadcast(mul * block sum at mem): the correction for weights
// stored with an offset (-8 for Q4_0 nibbles, -128 for biased Q8_0).
#define CORR(mem, mul, ireg) \
	MOVL mem, AX \
	IMULL $mul, AX \
	VMOVD AX, X12 \
	VPBROADCASTD X12, ireg

// facc += float(iacc) * (row scales in Y10) * broadcast(dmem). Clobbers Y11.
#define SCALE_ACC(dmem, iacc, facc) \
	VBROADCASTSS dmem, Y11 \
	VMULPS Y10, Y11, Y11 \
	VCVTDQ2PS iacc, iacc \
	VFMADD231PS Y11, iacc, facc

#define GEMV_ARGS \
	MOVQ w+0(FP), SI \
	MOVQ x+8(FP), DI \
	MOVQ d+16(FP), DX \
	MOVQ s+24(FP), R8 \
	MOVQ nb+32(FP), CX \
	MOVQ y+40(FP), BX \
	VXORPS Y0, Y0, Y0

#define GEMM_ARGS \
	MOVQ w+0(FP), SI \
	MOVQ x+8(FP), DI \
	MOVQ d+16(FP), DX \
	MOVQ s+24(FP), R8 \
	MOVQ nb+32(FP), CX \
	MOVQ xstride+40(FP), R9 \
	MOVQ y+48(FP), BX \
	MOVQ ystride+56(FP), R14 \
	MOVQ R9, R11 \
	SHRQ $3, R11 \
	LEAQ (DI)(R9*2), R10 \
	LEAQ (DX)(R11*2), R12 \
	LEAQ (R8)(R11*2), R13 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3

#define GEMM_STORE \
	VMOVUPS Y0, (BX) \
	VMOVUPS Y1, (BX)(R14*1) \
	LEAQ (BX)(R14*2), BX \
	VMOVUPS Y2, (BX) \
	VMOVUPS Y3, (BX)(R14*1) \
	VZEROUPPER \
	RET

#define GEMM_ADVANCE(bytes) \
	ADDQ $bytes, SI \
	ADDQ $32, DI \
	ADDQ $32, R10 \
	ADDQ $4, DX \
	ADDQ $4, R12 \
	ADDQ $4, R8 \
	ADDQ $4, R13

#define GEMM_CORR(mul) \
	CORR((R8), mul, Y4) \
	CORR((R8)(R11*1), mul, Y5) \
	CORR((R13), mul, Y6) \
	CORR((R13)(R11*1), mul, Y7)

#define GEMM_SCALE \
	VCVTPH2PS (SI), Y10 \
	SCALE_ACC((DX), Y4, Y0) \
	SCALE_ACC((DX)(R11*1), Y5, Y1) \
	SCALE_ACC((R12), Y6, Y2) \
	SCALE_ACC((R12)(R11*1), Y7, Y3)

// ---- Q4_0, AVX512-VNNI (EVEX vpdpbusd on ymm) ----

// Unpack chunk c (at off(SI)) into low (Y8) and high (Y9) nibbles.
#define Q4_UNPACK(off) \
	VMOVDQU off(SI), Y8 \
	VPSRLW $4, Y8, Y9 \
	VPAND Y14, Y8, Y8 \
	VPAND Y14, Y9, Y9

// func gemvQ4_0x8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
TEXT ·gemvQ4_0x8VNNI(SB), NOSPLIT, $0-48
	GEMV_ARGS
	NIBBLE_MASK_Y14
q4vnniloop:
	CORR((R8), -8, Y4)
	Q4_UNPACK(16)
	VPDPBUSD.BCST 0(DI), Y8, Y4
	VPDPBUSD.BCST 16(DI), Y9, Y4
	Q4_UNPACK(48)
	VPDPBUSD.BCST 4(DI), Y8, Y4
	VPDPBUSD.BCST 20(DI), Y9, Y4
	Q4_UNPACK(80)
	VPDPBUSD.BCST 8(DI), Y8, Y4
	VPDPBUSD.BCST 24(DI), Y9, Y4
	Q4_UNPACK(112)
	VPDPBUSD.BCST 12(DI), Y8, Y4
	VPDPBUSD.BCST 28(DI), Y9, Y4
	VCVTPH2PS (SI), Y10
	SCALE_ACC((DX), Y4, Y0)
	ADDQ $144, SI
	ADDQ $32, DI
	ADDQ $4, DX
	ADDQ $4, R8
	DECQ CX
	JNZ q4vnniloop
	VMOVUPS Y0, (BX)
	VZEROUPPER
	RET

#define Q4_VNNI_X4(lo, hi) \
	VPDPBUSD.BCST lo(DI), Y8, Y4 \
	VPDPBUSD.BCST hi(DI), Y9, Y4 \
	VPDPBUSD.BCST lo(DI)(R9*1), Y8, Y5 \
	VPDPBUSD.BCST hi(DI)(R9*1), Y9, Y5 \
	VPDPBUSD.BCST lo(R10), Y8, Y6 \
	VPDPBUSD.BCST hi(R10), Y9, Y6 \
	VPDPBUSD.BCST lo(R10)(R9*1), Y8, Y7 \
	VPDPBUSD.BCST hi(R10)(R9*1), Y9, Y7

// func gemmQ4_0x8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)
TEXT ·gemmQ4_0x8VNNI(SB), NOSPLIT, $0-64
	GEMM_ARGS
	NIBBLE_MASK_Y14
q4vnnigemm:
	GEMM_CORR(-8)
	Q4_UNPACK(16)
	Q4_VNNI_X4(0, 16)
	Q4_UNPACK(48)
	Q4_VNNI_X4(4, 20)
	Q4_UNPACK(80)
	Q4_VNNI_X4(8, 24)
	Q4_UNPACK(112)
	Q4_VNNI_X4(12, 28)
	GEMM_SCALE
	GEMM_ADVANCE(144)
	DECQ CX
	JNZ q4vnnigemm
	GEMM_STORE

// ---- Q4_0, AVX2 ----
// Products of 4-bit weights and 8-bit activations fit int16 for a whole
// block (|sum of 4| <= 4*15*127, 4 chunks: 30480), so a block is summed in
// int16 and widened once.

// acc16 += maddubs(Y8, bcast lo) + maddubs(Y9, bcast hi). Clobbers Y11, Y12.
#define Q4_AVX2_DOT(lo, hi, acc16) \
	VPBROADCASTD lo, Y11 \
	VPMADDUBSW Y11, Y8, Y11 \
	VPBROADCASTD hi, Y12 \
	VPMADDUBSW Y12, Y9, Y12 \
	VPADDW Y12, Y11, Y11 \
	VPADDW Y11, acc16, acc16

// func gemvQ4_0x8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
TEXT ·gemvQ4_0x8AVX2(SB), NOSPLIT, $0-48
	GEMV_ARGS
	NIBBLE_MASK_Y14
	ONES16_Y15
q4avx2loop:
	VPXOR Y5, Y5, Y5
	Q4_UNPACK(16)
	Q4_AVX2_DOT(0(DI), 16(DI), Y5)
	Q4_UNPACK(48)
	Q4_AVX2_DOT(4(DI), 20(DI), Y5)
	Q4_UNPACK(80)
	Q4_AVX2_DOT(8(DI), 24(DI), Y5)
	Q4_UNPACK(112)
	Q4_AVX2_DOT(12(DI), 28(DI), Y5)
	VPMADDWD Y15, Y5, Y5
	CORR((R8), -8, Y4)
	VPADDD Y5, Y4, Y4
	VCVTPH2PS (SI), Y10
	SCALE_ACC((DX), Y4, Y0)
	ADDQ $144, SI
	ADDQ $32, DI
	ADDQ $4, DX
	ADDQ $4, R8
	DECQ CX
	JNZ q4avx2loop
	VMOVUPS Y0, (BX)
	VZEROUPPER
	RET

#define Q4_AVX2_X4(lo, hi) \
	Q4_AVX2_DOT(lo(DI), hi(DI), Y4) \
	Q4_AVX2_DOT(lo(DI)(R9*1), hi(DI)(R9*1), Y5) \
	Q4_AVX2_DOT(lo(R10), hi(R10), Y6) \
	Q4_AVX2_DOT(lo(R10)(R9*1), hi(R10)(R9*1), Y7)

// iacc = maddwd(iacc16, ones) + corr (sum at mem). Clobbers Y12, Y13.
#define Q4_AVX2_WIDEN(mem, iacc) \
	VPMADDWD Y15, iacc, iacc \
	MOVL mem, AX \
	IMULL $-8, AX \
	VMOVD AX, X13 \
	VPBROADCASTD X13, Y13 \
	VPADDD Y13, iacc, iacc

// func gemmQ4_0x8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)
TEXT ·gemmQ4_0x8AVX2(SB), NOSPLIT, $0-64
	GEMM_ARGS
	NIBBLE_MASK_Y14
	ONES16_Y15
q4avx2gemm:
	VPXOR Y4, Y4, Y4
	VPXOR Y5, Y5, Y5
	VPXOR Y6, Y6, Y6
	VPXOR Y7, Y7, Y7
	Q4_UNPACK(16)
	Q4_AVX2_X4(0, 16)
	Q4_UNPACK(48)
	Q4_AVX2_X4(4, 20)
	Q4_UNPACK(80)
	Q4_AVX2_X4(8, 24)
	Q4_UNPACK(112)
	Q4_AVX2_X4(12, 28)
	Q4_AVX2_WIDEN((R8), Y4)
	Q4_AVX2_WIDEN((R8)(R11*1), Y5)
	Q4_AVX2_WIDEN((R13), Y6)
	Q4_AVX2_WIDEN((R13)(R11*1), Y7)
	GEMM_SCALE
	GEMM_ADVANCE(144)
	DECQ CX
	JNZ q4avx2gemm
	GEMM_STORE

// ---- Q8_0, AVX512-VNNI ----
// vpdpbusd needs unsigned weights: w xor 0x80 = w + 128, corrected by
// -128 * (sum of the activation block).

#define Q8_VNNI_LOAD(off) \
	VMOVDQU off(SI), Y8 \
	VPXOR Y13, Y8, Y8

// func gemvQ8_0x8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
TEXT ·gemvQ8_0x8VNNI(SB), NOSPLIT, $0-48
	GEMV_ARGS
	BIAS128_Y13
q8vnniloop:
	CORR((R8), -128, Y4)
	Q8_VNNI_LOAD(16)
	VPDPBUSD.BCST 0(DI), Y8, Y4
	Q8_VNNI_LOAD(48)
	VPDPBUSD.BCST 4(DI), Y8, Y4
	Q8_VNNI_LOAD(80)
	VPDPBUSD.BCST 8(DI), Y8, Y4
	Q8_VNNI_LOAD(112)
	VPDPBUSD.BCST 12(DI), Y8, Y4
	Q8_VNNI_LOAD(144)
	VPDPBUSD.BCST 16(DI), Y8, Y4
	Q8_VNNI_LOAD(176)
	VPDPBUSD.BCST 20(DI), Y8, Y4
	Q8_VNNI_LOAD(208)
	VPDPBUSD.BCST 24(DI), Y8, Y4
	Q8_VNNI_LOAD(240)
	VPDPBUSD.BCST 28(DI), Y8, Y4
	VCVTPH2PS (SI), Y10
	SCALE_ACC((DX), Y4, Y0)
	ADDQ $272, SI
	ADDQ $32, DI
	ADDQ $4, DX
	ADDQ $4, R8
	DECQ CX
	JNZ q8vnniloop
	VMOVUPS Y0, (BX)
	VZEROUPPER
	RET

#define Q8_VNNI_X4(off, xo) \
	Q8_VNNI_LOAD(off) \
	VPDPBUSD.BCST xo(DI), Y8, Y4 \
	VPDPBUSD.BCST xo(DI)(R9*1), Y8, Y5 \
	VPDPBUSD.BCST xo(R10), Y8, Y6 \
	VPDPBUSD.BCST xo(R10)(R9*1), Y8, Y7

// func gemmQ8_0x8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)
TEXT ·gemmQ8_0x8VNNI(SB), NOSPLIT, $0-64
	GEMM_ARGS
	BIAS128_Y13
q8vnnigemm:
	GEMM_CORR(-128)
	Q8_VNNI_X4(16, 0)
	Q8_VNNI_X4(48, 4)
	Q8_VNNI_X4(80, 8)
	Q8_VNNI_X4(112, 12)
	Q8_VNNI_X4(144, 16)
	Q8_VNNI_X4(176, 20)
	Q8_VNNI_X4(208, 24)
	Q8_VNNI_X4(240, 28)
	GEMM_SCALE
	GEMM_ADVANCE(272)
	DECQ CX
	JNZ q8vnnigemm
	GEMM_STORE

// ---- Q8_0, AVX2 ----
// Sign trick per chunk: |w| (unsigned) times x*sign(w) (signed); the int16
// pair sums (up to 2*128*127) are widened every chunk.

// Y8 = w chunk, Y9 = |w|.
#define Q8_AVX2_LOAD(off) \
	VMOVDQU off(SI), Y8 \
	VPABSB Y8, Y9

// iacc += maddwd(maddubs(|w|, sign(bcast x, w)), ones). Clobbers Y11.
#define Q8_AVX2_DOT(xmem, iacc) \
	VPBROADCASTD xmem, Y11 \
	VPSIGNB Y8, Y11, Y11 \
	VPMADDUBSW Y11, Y9, Y11 \
	VPMADDWD Y15, Y11, Y11 \
	VPADDD Y11, iacc, iacc

// func gemvQ8_0x8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
TEXT ·gemvQ8_0x8AVX2(SB), NOSPLIT, $0-48
	GEMV_ARGS
	ONES16_Y15
q8avx2loop:
	VPXOR Y4, Y4, Y4
	Q8_AVX2_LOAD(16)
	Q8_AVX2_DOT(0(DI), Y4)
	Q8_AVX2_LOAD(48)
	Q8_AVX2_DOT(4(DI), Y4)
	Q8_AVX2_LOAD(80)
	Q8_AVX2_DOT(8(DI), Y4)
	Q8_AVX2_LOAD(112)
	Q8_AVX2_DOT(12(DI), Y4)
	Q8_AVX2_LOAD(144)
	Q8_AVX2_DOT(16(DI), Y4)
	Q8_AVX2_LOAD(176)
	Q8_AVX2_DOT(20(DI), Y4)
	Q8_AVX2_LOAD(208)
	Q8_AVX2_DOT(24(DI), Y4)
	Q8_AVX2_LOAD(240)
	Q8_AVX2_DOT(28(DI), Y4)
	VCVTPH2PS (SI), Y10
	SCALE_ACC((DX), Y4, Y0)
	ADDQ $272, SI
	ADDQ $32, DI
	ADDQ $4, DX
	ADDQ $4, R8
	DECQ CX
	JNZ q8avx2loop
	VMOVUPS Y0, (BX)
	VZEROUPPER
	RET

#define Q8_AVX2_X4(off, xo) \
	Q8_AVX2_LOAD(off) \
	Q8_AVX2_DOT(xo(DI), Y4) \
	Q8_AVX2_DOT(xo(DI)(R9*1), Y5) \
	Q8_AVX2_DOT(xo(R10), Y6) \
	Q8_AVX2_DOT(xo(R10)(R9*1), Y7)

// func gemmQ8_0x8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)
TEXT ·gemmQ8_0x8AVX2(SB), NOSPLIT, $0-64
	GEMM_ARGS
	ONES16_Y15
q8avx2gemm:
	VPXOR Y4, Y4, Y4
	VPXOR Y5, Y5, Y5
	VPXOR Y6, Y6, Y6
	VPXOR Y7, Y7, Y7
	Q8_AVX2_X4(16, 0)
	Q8_AVX2_X4(48, 4)
	Q8_AVX2_X4(80, 8)
	Q8_AVX2_X4(112, 12)
	Q8_AVX2_X4(144, 16)
	Q8_AVX2_X4(176, 20)
	Q8_AVX2_X4(208, 24)
	Q8_AVX2_X4(240, 28)
	GEMM_SCALE
	GEMM_ADVANCE(272)
	DECQ CX
	JNZ q8avx2gemm
	GEMM_STORE

// ---- Q8_0, AVX512-VNNI, 8 activation rows ----
// The 4-row kernel's registers for rows 0-3, and Y16-Y19 (float) and Y20-Y23 (integer)
// for rows 4-7, so each weight chunk is loaded once for eight rows. Activation row i is at
//   0: DI  1: DI+R9  2: DI+2*R9  3: R10+R9  4: DI+4*R9  5: R15  6: R10+4*R9  7: R15+2*R9
// (R10 = DI+2*R9, R15 = DI+5*R9); its scales and block sums are at the same multiples of
// R11 from DX and R8 (R12 = DX+2*R11, R13 = R8+2*R11; rows 5 and 7 through AX).

#define Q8_VNNI_X8(off, xo) \
	Q8_VNNI_LOAD(off) \
	VPDPBUSD.BCST xo(DI), Y8, Y4 \
	VPDPBUSD.BCST xo(DI)(R9*1), Y8, Y5 \
	VPDPBUSD.BCST xo(DI)(R9*2), Y8, Y6 \
	VPDPBUSD.BCST xo(R10)(R9*1), Y8, Y7 \
	VPDPBUSD.BCST xo(DI)(R9*4), Y8, Y20 \
	VPDPBUSD.BCST xo(R15), Y8, Y21 \
	VPDPBUSD.BCST xo(R10)(R9*4), Y8, Y22 \
	VPDPBUSD.BCST xo(R15)(R9*2), Y8, Y23

// func gemmQ8_0x8VNNI8(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)
TEXT ·gemmQ8_0x8VNNI8(SB), NOSPLIT, $0-64
	GEMM_ARGS
	LEAQ (DI)(R9*4), R15
	ADDQ R9, R15
	VPXORD Y16, Y16, Y16
	VPXORD Y17, Y17, Y17
	VPXORD Y18, Y18, Y18
	VPXORD Y19, Y19, Y19
	BIAS128_Y13
q8vnnigemm8:
	// The corrections, rows 0-7.
	CORR((R8), -128, Y4)
	CORR((R8)(R11*1), -128, Y5)
	CORR((R8)(R11*2), -128, Y6)
	CORR((R13)(R11*1), -128, Y7)
	CORR((R8)(R11*4), -128, Y20)
	LEAQ (R8)(R11*4), AX
	ADDQ R11, AX
	CORR((AX), -128, Y21)
	CORR((R13)(R11*4), -128, Y22)
	LEAQ (R8)(R11*4), AX
	ADDQ R11, AX
	CORR((AX)(R11*2), -128, Y23)
	Q8_VNNI_X8(16, 0)
	Q8_VNNI_X8(48, 4)
	Q8_VNNI_X8(80, 8)
	Q8_VNNI_X8(112, 12)
	Q8_VNNI_X8(144, 16)
	Q8_VNNI_X8(176, 20)
	Q8_VNNI_X8(208, 24)
	Q8_VNNI_X8(240, 28)
	VCVTPH2PS (SI), Y10
	SCALE_ACC((DX), Y4, Y0)
	SCALE_ACC((DX)(R11*1), Y5, Y1)
	SCALE_ACC((DX)(R11*2), Y6, Y2)
	SCALE_ACC((R12)(R11*1), Y7, Y3)
	SCALE_ACC((DX)(R11*4), Y20, Y16)
	LEAQ (DX)(R11*4), AX
	ADDQ R11, AX
	SCALE_ACC((AX), Y21, Y17)
	SCALE_ACC((R12)(R11*4), Y22, Y18)
	SCALE_ACC((AX)(R11*2), Y23, Y19)
	GEMM_ADVANCE(272)
	ADDQ $32, R15
	DECQ CX
	JNZ q8vnnigemm8
	VMOVUPS Y0, (BX)
	VMOVUPS Y1, (BX)(R14*1)
	LEAQ (BX)(R14*2), BX
	VMOVUPS Y2, (BX)
	VMOVUPS Y3, (BX)(R14*1)
	LEAQ (BX)(R14*2), BX
	VMOVUPS Y16, (BX)
	VMOVUPS Y17, (BX)(R14*1)
	LEAQ (BX)(R14*2), BX
	VMOVUPS Y18, (BX)
	VMOVUPS Y19, (BX)(R14*1)
	VZEROUPPER
	RET
