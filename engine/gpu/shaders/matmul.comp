#version 450
// y[r][o] (+)= dot(W[o], x[r]) for one weight type (TYPE_* define) over
// up to n activation rows. Each workgroup takes ROWS weight rows; its 64
// invocations split the rows' columns, so every weight element or block
// is read once for up to NR activation rows at a time, and the partial
// sums meet through subgroupAdd and one shared-memory step.
//
// Quantized weights (Q8_0, Q4_0) take Q8_0 activations from quant_q8 and
// compute integer block sums, as the CPU kernels do; float weights take
// float activations rounded to the weight's type, as tensor.Acts does.
// Weights are read as 16-bit words (a Q8_0 block is 17, a Q4_0 block 9).
//
// Modes (p.mode bits): ACCUMULATE adds to y instead of storing; EXPERT
// takes the row count and the first slot of expert p.expert from the
// route buffer (binding 4: counts at [0,E), slot offsets at [E,2E), the
// token of each slot at [2E, 2E+slots)) and writes slot rows; GATHER reads
// the input row of each slot from that token list. A matrix too large for
// one binding is bound in row chunks, each dispatched with its yoff.
#include "common.glsl"
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 64) in;

#if defined(TYPE_F32)
layout(std430, binding = 0) readonly buffer W32 { float w32[]; };
#else
layout(std430, binding = 0) readonly buffer W { uint16_t w[]; };
#endif
#if defined(TYPE_Q8_0) || defined(TYPE_Q4_0)
#define QUANT 1
layout(std430, binding = 1) readonly buffer XQ { uint xq[]; };
layout(std430, binding = 2) readonly buffer XD { float xd[]; };
#endif
#ifndef QUANT
layout(std430, binding = 1) readonly buffer X { float x[]; };
#endif
layout(std430, binding = 3) buffer Y { float y[]; };
layout(std430, binding = 4) readonly buffer R { uint route[]; };

layout(push_constant) uniform P {
	uint rows, cols, n, mode, expert, experts;
	uint ystride, yoff; // y row r, weight row o is y[r*ystride + yoff + o]
} p;

const uint ACCUMULATE = 1u, EXPERT = 2u, GATHER = 4u;
// NR, the activation rows per pass, is a specialization constant (1 for
// decode, up to 8 for batches): every loop has constant bounds and is
// unrolled, so the accumulators stay in registers. Rows past the end are
// computed on clamped indices and not stored.
layout(constant_id = 0) const uint NR = 8u;
const uint ROWS = 4u; // weight rows per workgroup
const uint ACC = NR * ROWS;
shared float red[64][ACC]; // one row per subgroup (subgroups of at least 1)

#ifndef QUANT
float wval(uint o, uint i) {
#if defined(TYPE_F32)
	return w32[o * p.cols + i];
#elif defined(TYPE_F16)
	return half_to_float(uint(w[o * p.cols + i]));
#else
	return uintBitsToFloat(uint(w[o * p.cols + i]) << 16);
#endif
}

float xval(uint r, uint i) {
#if defined(TYPE_F16)
	return round_fp16(x[r * p.cols + i]);
#elif defined(TYPE_BF16)
	return round_bf16(x[r * p.cols + i]);
#else
	return x[r * p.cols + i];
#endif
}
#endif

#ifdef QUANT
// The signed quants of block b of row o, four to a packed int (byte k of
// word j is quant 4j+k), and its scale.
#if defined(TYPE_Q8_0)
const uint BW = 17u; // 16-bit words per block
void block(uint o, uint nb, uint b, out int q[8], out float d) {
	uint base = (o * nb + b) * BW;
	d = half_to_float(uint(w[base]));
	for (uint j = 0u; j < 8u; j++) {
		uint lo = uint(w[base + 1u + 2u * j]), hi = uint(w[base + 2u + 2u * j]);
		q[j] = int(lo | (hi << 16));
	}
}
#else
const uint BW = 9u;
// Q4_0: byte j of the 16 holds quant j (low nibble) and quant j+16 (high),
// each biased by 8. Returned unbiased (0..15) in the same 8-word layout as
// Q8_0; the caller subtracts 8 times the activations' sum.
void block(uint o, uint nb, uint b, out int q[8], out float d) {
	uint base = (o * nb + b) * BW;
	d = half_to_float(uint(w[base]));
	for (uint j = 0u; j < 4u; j++) {
		uint v = uint(w[base + 1u + 2u * j]) | (uint(w[base + 2u + 2u * j]) << 16); // bytes 4j..4j+3
		uint lo = v & 0x0f0f0f0fu, hi = (v >> 4) & 0x0f0f0f0fu;
		q[j] = int(lo);
		q[j + 4u] = int(hi);
	}
}
#endif

int dot4(int a, int b) {
	return bitfieldExtract(a, 0, 8) * bitfieldExtract(b, 0, 8) + bitfieldExtract(a, 8, 8) * bitfieldExtract(b, 8, 8) +
		bitfieldExtract(a, 16, 8) * bitfieldExtract(b, 16, 8) + bitfieldExtract(a, 24, 8) * bitfieldExtract(b, 24, 8);
}

#if defined(TYPE_Q4_0)
// Unsigned nibbles 0..15 times signed activations; the bias of 8 is taken
// off with the activations' sum.
int dot4u(int a, int b) {
	return int(bitfieldExtract(uint(a), 0, 8)) * bitfieldExtract(b, 0, 8) + int(bitfieldExtract(uint(a), 8, 8)) * bitfieldExtract(b, 8, 8) +
		int(bitfieldExtract(uint(a), 16, 8)) * bitfieldExtract(b, 16, 8) + int(bitfieldExtract(uint(a), 24, 8)) * bitfieldExtract(b, 24, 8);
}
int sum4(int b) {
	return bitfieldExtract(b, 0, 8) + bitfieldExtract(b, 8, 8) + bitfieldExtract(b, 16, 8) + bitfieldExtract(b, 24, 8);
}
#endif
#endif

void main() {
	uint o0 = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * ROWS;
	if (o0 >= p.rows) {
		return;
	}
	uint ow[ROWS];
	[[unroll]] for (uint r = 0u; r < ROWS; r++) {
		ow[r] = min(o0 + r, p.rows - 1u);
	}
	uint t = gl_LocalInvocationID.x;
	uint n = p.n, first = 0u;
	if ((p.mode & EXPERT) != 0u) {
		n = route[p.expert];
		first = route[p.experts + p.expert];
	}
	for (uint r0 = 0u; r0 < n; r0 += NR) {
		uint nr = min(NR, n - r0);
		uint inRow[NR];
		[[unroll]] for (uint k = 0u; k < NR; k++) {
			uint j = first + r0 + min(k, nr - 1u);
			inRow[k] = (p.mode & GATHER) != 0u ? route[2u * p.experts + j] : j;
		}
		float acc[ACC];
		[[unroll]] for (uint a = 0u; a < ACC; a++) {
			acc[a] = 0.0;
		}
#ifdef QUANT
		uint nb = p.cols / 32u;
		for (uint b = t; b < nb; b += 64u) {
			[[unroll]] for (uint r = 0u; r < ROWS; r++) {
				int q[8];
				float dw;
				block(ow[r], nb, b, q, dw);
				[[unroll]] for (uint k = 0u; k < NR; k++) {
					uint xb = inRow[k] * nb + b;
					int s = 0;
#if defined(TYPE_Q8_0)
					[[unroll]] for (uint j = 0u; j < 8u; j++) {
						s += dot4(q[j], int(xq[8u * xb + j]));
					}
#else
					int xs = 0;
					[[unroll]] for (uint j = 0u; j < 8u; j++) {
						int xv = int(xq[8u * xb + j]);
						s += dot4u(q[j], xv);
						xs += sum4(xv);
					}
					s -= 8 * xs;
#endif
					acc[k * ROWS + r] += dw * xd[xb] * float(s);
				}
			}
		}
#else
		for (uint i = t; i < p.cols; i += 64u) {
			float xv[NR];
			[[unroll]] for (uint k = 0u; k < NR; k++) {
				xv[k] = xval(inRow[k], i);
			}
			[[unroll]] for (uint r = 0u; r < ROWS; r++) {
				float wv = wval(ow[r], i);
				[[unroll]] for (uint k = 0u; k < NR; k++) {
					acc[k * ROWS + r] += wv * xv[k];
				}
			}
		}
#endif
		[[unroll]] for (uint a = 0u; a < ACC; a++) {
			float v = subgroupAdd(acc[a]);
			if (subgroupElect()) {
				red[gl_SubgroupID][a] = v;
			}
		}
		barrier();
		if (t < ACC) {
			uint k = t / ROWS, r = t % ROWS;
			if (k < nr && o0 + r < p.rows) {
				float v = 0.0;
				for (uint s = 0u; s < gl_NumSubgroups; s++) {
					v += red[s][t];
				}
				uint dst = (first + r0 + k) * p.ystride + p.yoff + o0 + r;
				y[dst] = (p.mode & ACCUMULATE) != 0u ? y[dst] + v : v;
			}
		}
		barrier();
	}
}
