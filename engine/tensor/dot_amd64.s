//go:build amd64 && !purego

#include "textflag.h"

// Sum the 8 floats of Y0 into X0's low lane as ((0+1)+(2+3)) + ((4+5)+(6+7)),
// the same order HSUM4_STORE uses, so one-row and four-row kernels agree
// bit for bit.
#define HSUM_Y0 \
	VHADDPS Y0, Y0, Y0 \
	VHADDPS Y0, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0

// Y15 = 16-bit ones for VPMADDWD.
#define ONES16_Y15 \
	MOVL $0x00010001, AX \
	VMOVD AX, X15 \
	VPBROADCASTD X15, Y15

// Y14 = 0x0f bytes, Y13 = 8 bytes (Q4_0 unpacking).
#define NIBBLE_CONSTS \
	MOVL $0x0f0f0f0f, AX \
	VMOVD AX, X14 \
	VPBROADCASTD X14, Y14 \
	MOVL $0x08080808, AX \
	VMOVD AX, X13 \
	VPBROADCASTD X13, Y13

// Load the f16 scale at (SI) as a float32 in the low lane of xreg.
#define LOAD_F16_SCALE(xreg) \
	MOVWLZX (SI), AX \
	VMOVD AX, xreg \
	VCVTPH2PS xreg, xreg

// Unpack the 16 nibble bytes at 2(SI) to 32 signed values q-8 in Y5:
// the low nibbles are elements 0-15, the high nibbles 16-31.
#define UNPACK_Q4_0_Y5 \
	VMOVDQU 2(SI), X5 \
	VPSRLW $4, X5, X6 \
	VINSERTI128 $1, X6, Y5, Y5 \
	VPAND Y14, Y5, Y5 \
	VPSUBB Y13, Y5, Y5

// acc += float(sum_pairs(|w| * x*sign(w))) * broadcast(scale), where Y5
// holds w, Y6 holds |w|, xmem is the activation block and scale a float in
// the low lane of sreg. Clobbers Y7, Y8.
#define DOT_BLOCK(xmem, sreg, acc) \
	VMOVDQU xmem, Y7 \
	VPSIGNB Y5, Y7, Y7 \
	VPMADDUBSW Y7, Y6, Y7 \
	VPMADDWD Y15, Y7, Y7 \
	VCVTDQ2PS Y7, Y7 \
	VBROADCASTSS sreg, Y8 \
	VFMADD231PS Y8, Y7, acc

// Reduce four accumulators Y0..Y3 to their four sums and store them at (BX).
#define HSUM4_STORE \
	VHADDPS Y1, Y0, Y0 \
	VHADDPS Y3, Y2, Y2 \
	VHADDPS Y2, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VMOVUPS X0, (BX)

// One weight block (already in Y5, |w| in Y6, f16 scale in X4) against the
// same block of four activation rows: rows at DI, DI+R8, R10, R10+R8 and
// their scales at DX, DX+R9, R11, R11+R9.
#define DOT_BLOCK_X4 \
	VMULSS (DX), X4, X9 \
	DOT_BLOCK((DI), X9, Y0) \
	VMULSS (DX)(R9*1), X4, X9 \
	DOT_BLOCK((DI)(R8*1), X9, Y1) \
	VMULSS (R11), X4, X9 \
	DOT_BLOCK((R10), X9, Y2) \
	VMULSS (R11)(R9*1), X4, X9 \
	DOT_BLOCK((R10)(R8*1), X9, Y3)

#define SETUP_X4 \
	MOVQ w+0(FP), SI \
	MOVQ x+8(FP), DI \
	MOVQ d+16(FP), DX \
	MOVQ nb+24(FP), CX \
	MOVQ xstride+32(FP), R8 \
	MOVQ out+40(FP), BX \
	MOVQ R8, R9 \
	SHRQ $3, R9 \
	LEAQ (DI)(R8*2), R10 \
	LEAQ (DX)(R9*2), R11 \
	ONES16_Y15 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3

// Kernels for AVX2 + FMA + F16C. The integer dot of a signed weight block
// with signed activation quants uses the usual VPMADDUBSW sign trick:
// |w| (unsigned) times x*sign(w) (signed) gives w*x in 16-bit pairs, then
// VPMADDWD with ones sums pairs to 32 bits.

// func dotF32AVX2(w *byte, x *float32, n int) float32
// n must be a multiple of 8.
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
f32loop32:
	CMPQ CX, $32
	JLT f32loop8
	VMOVUPS 0(SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS 0(DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP f32loop32
f32loop8:
	CMPQ CX, $8
	JLT f32done
	VMOVUPS 0(SI), Y4
	VFMADD231PS 0(DI), Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP f32loop8
f32done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM_Y0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotF16AVX2(w *byte, x *float32, n int) float32
// n must be a multiple of 8.
TEXT ·dotF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
f16loop32:
	CMPQ CX, $32
	JLT f16loop8
	VCVTPH2PS 0(SI), Y4
	VCVTPH2PS 16(SI), Y5
	VCVTPH2PS 32(SI), Y6
	VCVTPH2PS 48(SI), Y7
	VFMADD231PS 0(DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP f16loop32
f16loop8:
	CMPQ CX, $8
	JLT f16done
	VCVTPH2PS 0(SI), Y4
	VFMADD231PS 0(DI), Y4, Y0
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP f16loop8
f16done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM_Y0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotBF16AVX2(w *byte, x *float32, n int) float32
// n must be a multiple of 8.
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
bf16loop16:
	CMPQ CX, $16
	JLT bf16loop8
	VPMOVZXWD 0(SI), Y4
	VPMOVZXWD 16(SI), Y5
	VPSLLD $16, Y4, Y4
	VPSLLD $16, Y5, Y5
	VFMADD231PS 0(DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	ADDQ $32, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP bf16loop16
bf16loop8:
	CMPQ CX, $8
	JLT bf16done
	VPMOVZXWD 0(SI), Y4
	VPSLLD $16, Y4, Y4
	VFMADD231PS 0(DI), Y4, Y0
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP bf16loop8
bf16done:
	VADDPS Y1, Y0, Y0
	HSUM_Y0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotQ8_0AVX2(w *byte, x *int8, d *float32, nb int) float32
TEXT ·dotQ8_0AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ d+16(FP), DX
	MOVQ nb+24(FP), CX
	ONES16_Y15
	VXORPS Y0, Y0, Y0
	TESTQ CX, CX
	JZ q80done
q80loop:
	LOAD_F16_SCALE(X4)
	VMULSS (DX), X4, X4
	VMOVDQU 2(SI), Y5
	VPSIGNB Y5, Y5, Y6
	DOT_BLOCK((DI), X4, Y0)
	ADDQ $34, SI
	ADDQ $32, DI
	ADDQ $4, DX
	DECQ CX
	JNZ q80loop
q80done:
	HSUM_Y0
	VMOVSS X0, ret+32(FP)
	VZEROUPPER
	RET

// func dotQ4_0AVX2(w *byte, x *int8, d *float32, nb int) float32
TEXT ·dotQ4_0AVX2(SB), NOSPLIT, $0-36
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ d+16(FP), DX
	MOVQ nb+24(FP), CX
	ONES16_Y15
	NIBBLE_CONSTS
	VXORPS Y0, Y0, Y0
	TESTQ CX, CX
	JZ q40done
q40loop:
	LOAD_F16_SCALE(X4)
	VMULSS (DX), X4, X4
	UNPACK_Q4_0_Y5
	VPSIGNB Y5, Y5, Y6
	DOT_BLOCK((DI), X4, Y0)
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $4, DX
	DECQ CX
	JNZ q40loop
q40done:
	HSUM_Y0
	VMOVSS X0, ret+32(FP)
	VZEROUPPER
	RET

// func dotQ8_0x4AVX2(w *byte, x *int8, d *float32, nb int, xstride int, out *[4]float32)
// xstride is the byte distance between activation rows (a multiple of 32);
// their scale rows are xstride/8 bytes apart.
TEXT ·dotQ8_0x4AVX2(SB), NOSPLIT, $0-48
	SETUP_X4
	TESTQ CX, CX
	JZ q80x4done
q80x4loop:
	LOAD_F16_SCALE(X4)
	VMOVDQU 2(SI), Y5
	VPSIGNB Y5, Y5, Y6
	DOT_BLOCK_X4
	ADDQ $34, SI
	ADDQ $32, DI
	ADDQ $32, R10
	ADDQ $4, DX
	ADDQ $4, R11
	DECQ CX
	JNZ q80x4loop
q80x4done:
	HSUM4_STORE
	VZEROUPPER
	RET

// func dotQ4_0x4AVX2(w *byte, x *int8, d *float32, nb int, xstride int, out *[4]float32)
TEXT ·dotQ4_0x4AVX2(SB), NOSPLIT, $0-48
	SETUP_X4
	NIBBLE_CONSTS
	TESTQ CX, CX
	JZ q40x4done
q40x4loop:
	LOAD_F16_SCALE(X4)
	UNPACK_Q4_0_Y5
	VPSIGNB Y5, Y5, Y6
	DOT_BLOCK_X4
	ADDQ $18, SI
	ADDQ $32, DI
	ADDQ $32, R10
	ADDQ $4, DX
	ADDQ $4, R11
	DECQ CX
	JNZ q40x4loop
q40x4done:
	HSUM4_STORE
	VZEROUPPER
	RET

// func axpyAVX2(y *float32, alpha float32, x *float32, n int)
// y[i] += alpha*x[i] for n floats, n a multiple of 8.
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	MOVQ y+0(FP), DI
	VBROADCASTSS alpha+8(FP), Y0
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
axpy32:
	CMPQ CX, $32
	JLT axpy8
	VMOVUPS 0(DI), Y1
	VMOVUPS 32(DI), Y2
	VMOVUPS 64(DI), Y3
	VMOVUPS 96(DI), Y4
	VFMADD231PS 0(SI), Y0, Y1
	VFMADD231PS 32(SI), Y0, Y2
	VFMADD231PS 64(SI), Y0, Y3
	VFMADD231PS 96(SI), Y0, Y4
	VMOVUPS Y1, 0(DI)
	VMOVUPS Y2, 32(DI)
	VMOVUPS Y3, 64(DI)
	VMOVUPS Y4, 96(DI)
	ADDQ $128, DI
	ADDQ $128, SI
	SUBQ $32, CX
	JMP axpy32
axpy8:
	CMPQ CX, $8
	JLT axpydone
	VMOVUPS 0(DI), Y1
	VFMADD231PS 0(SI), Y0, Y1
	VMOVUPS Y1, 0(DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
	JMP axpy8
axpydone:
	VZEROUPPER
	RET

// func swigluAVX2(gate *float32, up *float32, n int, consts *[12]float32)
// g[i] = g[i] / (1 + exp(-g[i])) * u[i] for n floats, n a multiple of 8.
// exp is Cephes' expf: range reduction by ln 2 in two parts and a degree-5
// polynomial, within 2 ulp over the float range; consts holds
// {hi, lo clamps, log2(e), ln2 hi, ln2 lo, p0..p5, 1}.
TEXT ·swigluAVX2(SB), NOSPLIT, $0-32
	MOVQ gate+0(FP), DI
	MOVQ up+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ consts+24(FP), AX
	VBROADCASTSS 0(AX), Y15   // 88.3762626647949
	VBROADCASTSS 4(AX), Y14   // -88.3762626647949
	VBROADCASTSS 8(AX), Y13   // log2(e)
	VBROADCASTSS 12(AX), Y12  // ln2 hi
	VBROADCASTSS 16(AX), Y11  // ln2 lo
	VBROADCASTSS 44(AX), Y10  // 1.0
	MOVL $127, BX
	VMOVD BX, X9
	VPBROADCASTD X9, Y9
swiglu8:
	TESTQ CX, CX
	JZ swiglu_done
	VMOVUPS (DI), Y0          // g
	VXORPS Y1, Y1, Y1
	VSUBPS Y0, Y1, Y1         // x = -g
	VMINPS Y15, Y1, Y1
	VMAXPS Y14, Y1, Y1
	VMULPS Y13, Y1, Y2
	VROUNDPS $0, Y2, Y2       // n = round(x log2 e)
	VFNMADD231PS Y12, Y2, Y1  // x -= n ln2hi
	VFNMADD231PS Y11, Y2, Y1  // x -= n ln2lo  (r)
	VBROADCASTSS 20(AX), Y3   // p0
	VBROADCASTSS 24(AX), Y4
	VFMADD213PS Y4, Y1, Y3    // p0 r + p1
	VBROADCASTSS 28(AX), Y4
	VFMADD213PS Y4, Y1, Y3
	VBROADCASTSS 32(AX), Y4
	VFMADD213PS Y4, Y1, Y3
	VBROADCASTSS 36(AX), Y4
	VFMADD213PS Y4, Y1, Y3
	VBROADCASTSS 40(AX), Y4
	VFMADD213PS Y4, Y1, Y3    // ... + p5
	VMULPS Y1, Y1, Y4         // r^2
	VFMADD213PS Y1, Y4, Y3    // poly r^2 + r
	VADDPS Y10, Y3, Y3        // + 1
	VCVTPS2DQ Y2, Y2
	VPADDD Y9, Y2, Y2
	VPSLLD $23, Y2, Y2        // 2^n
	VMULPS Y2, Y3, Y3         // exp(-g)
	VADDPS Y10, Y3, Y3        // 1 + exp(-g)
	VDIVPS Y3, Y0, Y0         // g / (1 + exp(-g))
	VMULPS (SI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
	JMP swiglu8
swiglu_done:
	VZEROUPPER
	RET
