//go:build amd64 && !purego

#include "textflag.h"

// Packed K-quant kernels (layouts in packed.go), one activation row:
// y[k] = dot(row k, x) for the 8 rows of a group, over nb 256-element
// blocks. Activations are Q8_K: int8 quants, one float scale per block and
// int32 sums of every 16 quants.
//
// Registers: Y0 float accumulator (8 rows), Y1 the block's scaled integer
// dot products, Y2 its mins (Q4_K), Y3/Y4 sub-block sums, Y14 0x0f mask,
// Y15 16-bit ones (AVX2), Y13 0x03 mask (Q6_K). SI weights, DI quants, DX
// scales, R8 16-element sums.

#define K_ARGS \
	MOVQ w+0(FP), SI \
	MOVQ x+8(FP), DI \
	MOVQ d+16(FP), DX \
	MOVQ s+24(FP), R8 \
	MOVQ nb+32(FP), CX \
	MOVQ y+40(FP), BX \
	VXORPS Y0, Y0, Y0 \
	MOVL $0x0f0f0f0f, AX \
	VMOVD AX, X14 \
	VPBROADCASTD X14, Y14 \
	MOVL $0x00010001, AX \
	VMOVD AX, X15 \
	VPBROADCASTD X15, Y15 \
	MOVL $0x03030303, AX \
	VMOVD AX, X13 \
	VPBROADCASTD X13, Y13

#define K_NEXT(bytes) \
	ADDQ $bytes, SI \
	ADDQ $256, DI \
	ADDQ $4, DX \
	ADDQ $64, R8 \
	DECQ CX

#define K_STORE \
	VMOVUPS Y0, (BX) \
	VZEROUPPER \
	RET

// ---- Q4_K ----

// Chunk (group g, step st) at 160+32*(8g+st): low nibbles meet
// x[64g+4st..], high nibbles x[64g+32+4st..].
#define Q4K_VNNI_STEP(coff, xlo, xhi) \
	VMOVDQU coff(SI), Y5 \
	VPSRLW $4, Y5, Y6 \
	VPAND Y14, Y5, Y5 \
	VPAND Y14, Y6, Y6 \
	VPDPBUSD.BCST xlo(DI), Y5, Y3 \
	VPDPBUSD.BCST xhi(DI), Y6, Y4

// Y1 += Y3 * scales(sub-block 2g) + Y4 * scales(sub-block 2g+1).
#define Q4K_SCALE_GROUP(soff) \
	VPMOVZXBD soff(SI), Y7 \
	VPMULLD Y7, Y3, Y3 \
	VPADDD Y3, Y1, Y1 \
	VPMOVZXBD soff+8(SI), Y7 \
	VPMULLD Y7, Y4, Y4 \
	VPADDD Y4, Y1, Y1

#define Q4K_VNNI_GROUP(g) \
	VPXOR Y3, Y3, Y3 \
	VPXOR Y4, Y4, Y4 \
	Q4K_VNNI_STEP(160+256*g, 64*g, 64*g+32) \
	Q4K_VNNI_STEP(160+256*g+32, 64*g+4, 64*g+36) \
	Q4K_VNNI_STEP(160+256*g+64, 64*g+8, 64*g+40) \
	Q4K_VNNI_STEP(160+256*g+96, 64*g+12, 64*g+44) \
	Q4K_VNNI_STEP(160+256*g+128, 64*g+16, 64*g+48) \
	Q4K_VNNI_STEP(160+256*g+160, 64*g+20, 64*g+52) \
	Q4K_VNNI_STEP(160+256*g+192, 64*g+24, 64*g+56) \
	Q4K_VNNI_STEP(160+256*g+224, 64*g+28, 64*g+60) \
	Q4K_SCALE_GROUP(32+16*g)

// Y2 += mins(sub-block j) * (sum of the 32 quants of sub-block j).
#define Q4K_MIN(j) \
	MOVL (8*j)(R8), AX \
	ADDL (8*j+4)(R8), AX \
	VMOVD AX, X8 \
	VPBROADCASTD X8, Y8 \
	VPMOVZXBD (96+8*j)(SI), Y7 \
	VPMULLD Y7, Y8, Y8 \
	VPADDD Y8, Y2, Y2

// Y0 += dx * (d * float(Y1) - dmin * float(Y2)).
#define Q4K_FINISH \
	Q4K_MIN(0) \
	Q4K_MIN(1) \
	Q4K_MIN(2) \
	Q4K_MIN(3) \
	Q4K_MIN(4) \
	Q4K_MIN(5) \
	Q4K_MIN(6) \
	Q4K_MIN(7) \
	VCVTPH2PS 0(SI), Y8 \
	VCVTPH2PS 16(SI), Y9 \
	VCVTDQ2PS Y1, Y1 \
	VCVTDQ2PS Y2, Y2 \
	VMULPS Y1, Y8, Y8 \
	VMULPS Y2, Y9, Y9 \
	VSUBPS Y9, Y8, Y8 \
	VBROADCASTSS (DX), Y9 \
	VFMADD231PS Y9, Y8, Y0

// func gemvQ4Kx8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
TEXT ·gemvQ4Kx8VNNI(SB), NOSPLIT, $0-48
	K_ARGS
q4kvnni:
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	Q4K_VNNI_GROUP(0)
	Q4K_VNNI_GROUP(1)
	Q4K_VNNI_GROUP(2)
	Q4K_VNNI_GROUP(3)
	Q4K_FINISH
	K_NEXT(1184)
	JNZ q4kvnni
	K_STORE

// AVX2: products of nibbles and int8 fit int16 for a whole sub-block
// (8 steps x 2 products x 15 x 127 = 30480), widened once per sub-block.
#define Q4K_AVX2_STEP(coff, xlo, xhi) \
	VMOVDQU coff(SI), Y5 \
	VPSRLW $4, Y5, Y6 \
	VPAND Y14, Y5, Y5 \
	VPAND Y14, Y6, Y6 \
	VPBROADCASTD xlo(DI), Y7 \
	VPMADDUBSW Y7, Y5, Y5 \
	VPADDW Y5, Y3, Y3 \
	VPBROADCASTD xhi(DI), Y7 \
	VPMADDUBSW Y7, Y6, Y6 \
	VPADDW Y6, Y4, Y4

#define Q4K_AVX2_GROUP(g) \
	VPXOR Y3, Y3, Y3 \
	VPXOR Y4, Y4, Y4 \
	Q4K_AVX2_STEP(160+256*g, 64*g, 64*g+32) \
	Q4K_AVX2_STEP(160+256*g+32, 64*g+4, 64*g+36) \
	Q4K_AVX2_STEP(160+256*g+64, 64*g+8, 64*g+40) \
	Q4K_AVX2_STEP(160+256*g+96, 64*g+12, 64*g+44) \
	Q4K_AVX2_STEP(160+256*g+128, 64*g+16, 64*g+48) \
	Q4K_AVX2_STEP(160+256*g+160, 64*g+20, 64*g+52) \
	Q4K_AVX2_STEP(160+256*g+192, 64*g+24, 64*g+56) \
	Q4K_AVX2_STEP(160+256*g+224, 64*g+28, 64*g+60) \
	VPMADDWD Y15, Y3, Y3 \
	VPMADDWD Y15, Y4, Y4 \
	Q4K_SCALE_GROUP(32+16*g)

// func gemvQ4Kx8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
TEXT ·gemvQ4Kx8AVX2(SB), NOSPLIT, $0-48
	K_ARGS
q4kavx2:
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	Q4K_AVX2_GROUP(0)
	Q4K_AVX2_GROUP(1)
	Q4K_AVX2_GROUP(2)
	Q4K_AVX2_GROUP(3)
	Q4K_FINISH
	K_NEXT(1184)
	JNZ q4kavx2
	K_STORE

// ---- Q6_K ----
// Element 128h+32kk+4st+i (kk < 4) has low 4 bits in ql chunk 16h+8(kk&1)+st
// (low nibble for kk < 2, high otherwise) and top 2 bits in qh chunk 8h+st
// (bits 2kk, 2kk+1). Quants are 0..63 (stored value + 32); sub-block j =
// 8h+2kk+(st>=4) holds 16 elements; its correction is -32 * its 16-sum.

// Y5 = 6-bit quants of (h, kk, st) as bytes. Clobbers Y6.
#define Q6K_LOAD(h, kk, st, qlshift, qhshift) \
	VMOVDQU (144+32*(16*(h)+8*((kk)&1)+(st)))(SI), Y5 \
	VPSRLW $qlshift, Y5, Y5 \
	VPAND Y14, Y5, Y5 \
	VMOVDQU (1168+32*(8*(h)+(st)))(SI), Y6 \
	VPSRLW $qhshift, Y6, Y6 \
	VPAND Y13, Y6, Y6 \
	VPSLLW $4, Y6, Y6 \
	VPOR Y6, Y5, Y5

// Y1 += scales(j) * (Y3 - 32 * sum16(j)). Clobbers Y7, Y8.
#define Q6K_SCALE(j) \
	MOVL (4*(j))(R8), AX \
	SHLL $5, AX \
	VMOVD AX, X8 \
	VPBROADCASTD X8, Y8 \
	VPSUBD Y8, Y3, Y3 \
	VPMOVSXBD (16+8*(j))(SI), Y7 \
	VPMULLD Y7, Y3, Y3 \
	VPADDD Y3, Y1, Y1

#define Q6K_VNNI_STEP(h, kk, st, qlshift, qhshift) \
	Q6K_LOAD(h, kk, st, qlshift, qhshift) \
	VPDPBUSD.BCST (128*(h)+32*(kk)+4*(st))(DI), Y5, Y3

#define Q6K_VNNI_SUB(h, kk, sb, qlshift, qhshift) \
	VPXOR Y3, Y3, Y3 \
	Q6K_VNNI_STEP(h, kk, 4*sb, qlshift, qhshift) \
	Q6K_VNNI_STEP(h, kk, 4*sb+1, qlshift, qhshift) \
	Q6K_VNNI_STEP(h, kk, 4*sb+2, qlshift, qhshift) \
	Q6K_VNNI_STEP(h, kk, 4*sb+3, qlshift, qhshift) \
	Q6K_SCALE(8*h+2*kk+sb)

#define Q6K_VNNI_HALF(h) \
	Q6K_VNNI_SUB(h, 0, 0, 0, 0) \
	Q6K_VNNI_SUB(h, 0, 1, 0, 0) \
	Q6K_VNNI_SUB(h, 1, 0, 0, 2) \
	Q6K_VNNI_SUB(h, 1, 1, 0, 2) \
	Q6K_VNNI_SUB(h, 2, 0, 4, 4) \
	Q6K_VNNI_SUB(h, 2, 1, 4, 4) \
	Q6K_VNNI_SUB(h, 3, 0, 4, 6) \
	Q6K_VNNI_SUB(h, 3, 1, 4, 6)

// Y0 += dx * d * float(Y1).
#define Q6K_FINISH \
	VCVTPH2PS 0(SI), Y8 \
	VCVTDQ2PS Y1, Y1 \
	VBROADCASTSS (DX), Y9 \
	VMULPS Y9, Y8, Y8 \
	VFMADD231PS Y8, Y1, Y0

// func gemvQ6Kx8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
TEXT ·gemvQ6Kx8VNNI(SB), NOSPLIT, $0-48
	K_ARGS
q6kvnni:
	VPXOR Y1, Y1, Y1
	Q6K_VNNI_HALF(0)
	Q6K_VNNI_HALF(1)
	Q6K_FINISH
	K_NEXT(1680)
	JNZ q6kvnni
	K_STORE

// AVX2: 6-bit x int8 pairs reach 2*63*127 = 16002, so two steps are summed
// in int16 before widening.
#define Q6K_AVX2_PAIR(h, kk, st, qlshift, qhshift) \
	Q6K_LOAD(h, kk, st, qlshift, qhshift) \
	VPBROADCASTD (128*(h)+32*(kk)+4*(st))(DI), Y7 \
	VPMADDUBSW Y7, Y5, Y4 \
	Q6K_LOAD(h, kk, (st)+1, qlshift, qhshift) \
	VPBROADCASTD (128*(h)+32*(kk)+4*(st)+4)(DI), Y7 \
	VPMADDUBSW Y7, Y5, Y5 \
	VPADDW Y5, Y4, Y4 \
	VPMADDWD Y15, Y4, Y4 \
	VPADDD Y4, Y3, Y3

#define Q6K_AVX2_SUB(h, kk, sb, qlshift, qhshift) \
	VPXOR Y3, Y3, Y3 \
	Q6K_AVX2_PAIR(h, kk, 4*sb, qlshift, qhshift) \
	Q6K_AVX2_PAIR(h, kk, 4*sb+2, qlshift, qhshift) \
	Q6K_SCALE(8*h+2*kk+sb)

#define Q6K_AVX2_HALF(h) \
	Q6K_AVX2_SUB(h, 0, 0, 0, 0) \
	Q6K_AVX2_SUB(h, 0, 1, 0, 0) \
	Q6K_AVX2_SUB(h, 1, 0, 0, 2) \
	Q6K_AVX2_SUB(h, 1, 1, 0, 2) \
	Q6K_AVX2_SUB(h, 2, 0, 4, 4) \
	Q6K_AVX2_SUB(h, 2, 1, 4, 4) \
	Q6K_AVX2_SUB(h, 3, 0, 4, 6) \
	Q6K_AVX2_SUB(h, 3, 1, 4, 6)

// func gemvQ6Kx8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
TEXT ·gemvQ6Kx8AVX2(SB), NOSPLIT, $0-48
	K_ARGS
q6kavx2:
	VPXOR Y1, Y1, Y1
	Q6K_AVX2_HALF(0)
	Q6K_AVX2_HALF(1)
	Q6K_FINISH
	K_NEXT(1680)
	JNZ q6kavx2
	K_STORE
