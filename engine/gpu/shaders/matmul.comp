#version 450
// y[r][o] (+)= dot(W[o], x[r]) for one weight type (TYPE_* define) over
// up to n activation rows. One workgroup per weight row; its 64 invocations
// split the row, and each weight element or block is read once for up to
// eight activation rows.
//
// Quantized weights (Q8_0, Q4_0) take Q8_0 activations from quant_q8 and
// compute integer block sums, as the CPU kernels do; float weights take
// float activations rounded to the weight's type, as tensor.Acts does.
//
// Modes (p.mode bits): ACCUMULATE adds to y instead of storing; EXPERT
// takes the row count and the first slot of expert p.expert from the
// route buffer (binding 4: counts at [0,E), slot offsets at [E,2E), the
// token of each slot at [2E, 2E+slots)) and writes slot rows; GATHER reads
// the input row of each slot from that token list. A matrix too large for
// one binding is bound in row chunks, each dispatched with its yoff.
#include "common.glsl"
layout(local_size_x = 64) in;

#if defined(TYPE_Q8_0)
struct block { uint16_t d; int8_t qs[32]; };
layout(std430, binding = 0) readonly buffer W { block w[]; };
#define QUANT 1
#elif defined(TYPE_Q4_0)
struct block { uint16_t d; uint8_t qs[16]; };
layout(std430, binding = 0) readonly buffer W { block w[]; };
#define QUANT 1
#elif defined(TYPE_F32)
layout(std430, binding = 0) readonly buffer W { float w[]; };
#else
layout(std430, binding = 0) readonly buffer W { uint16_t w[]; };
#endif

#ifdef QUANT
layout(std430, binding = 1) readonly buffer XQ { uint xq[]; };
layout(std430, binding = 2) readonly buffer XD { float xd[]; };
#else
layout(std430, binding = 1) readonly buffer X { float x[]; };
#endif
layout(std430, binding = 3) buffer Y { float y[]; };
layout(std430, binding = 4) readonly buffer R { uint route[]; };

layout(push_constant) uniform P {
	uint rows, cols, n, mode, expert, experts;
	uint ystride, yoff; // y row r, weight row o is y[r*ystride + yoff + o]
} p;

const uint ACCUMULATE = 1u, EXPERT = 2u, GATHER = 4u;
const uint NR = 8u;
shared float red[NR * 64u];

#ifndef QUANT
float wval(uint o, uint i) {
#if defined(TYPE_F32)
	return w[o * p.cols + i];
#elif defined(TYPE_F16)
	return half_to_float(uint(w[o * p.cols + i]));
#else
	return uintBitsToFloat(uint(w[o * p.cols + i]) << 16);
#endif
}
#endif

float xval(uint r, uint i) {
#ifdef QUANT
	return 0.0;
#elif defined(TYPE_F16)
	return round_fp16(x[r * p.cols + i]);
#elif defined(TYPE_BF16)
	return round_bf16(x[r * p.cols + i]);
#else
	return x[r * p.cols + i];
#endif
}

void main() {
	uint o = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
	if (o >= p.rows) {
		return;
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
		for (uint k = 0u; k < nr; k++) {
			uint j = first + r0 + k;
			inRow[k] = (p.mode & GATHER) != 0u ? route[2u * p.experts + j] : j;
		}
		float acc[NR];
		for (uint k = 0u; k < NR; k++) {
			acc[k] = 0.0;
		}
#ifdef QUANT
		uint nb = p.cols / 32u;
		for (uint b = t; b < nb; b += 64u) {
			uint wb = o * nb + b;
			float dw = half_to_float(uint(w[wb].d));
			int wq[32];
#if defined(TYPE_Q8_0)
			for (uint j = 0u; j < 32u; j++) {
				wq[j] = int(w[wb].qs[j]);
			}
#else
			for (uint j = 0u; j < 16u; j++) {
				uint v = uint(w[wb].qs[j]);
				wq[j] = int(v & 0xfu) - 8;
				wq[j + 16u] = int(v >> 4) - 8;
			}
#endif
			for (uint k = 0u; k < nr; k++) {
				uint xb = inRow[k] * nb + b;
				int s = 0;
				for (uint j = 0u; j < 8u; j++) {
					int packed = int(xq[8u * xb + j]);
					s += wq[4u * j] * bitfieldExtract(packed, 0, 8);
					s += wq[4u * j + 1u] * bitfieldExtract(packed, 8, 8);
					s += wq[4u * j + 2u] * bitfieldExtract(packed, 16, 8);
					s += wq[4u * j + 3u] * bitfieldExtract(packed, 24, 8);
				}
				acc[k] += dw * xd[xb] * float(s);
			}
		}
#else
		for (uint i = t; i < p.cols; i += 64u) {
			float wv = wval(o, i);
			for (uint k = 0u; k < nr; k++) {
				acc[k] += wv * xval(inRow[k], i);
			}
		}
#endif
		for (uint k = 0u; k < NR; k++) {
			red[k * 64u + t] = acc[k];
		}
		barrier();
		for (uint s = 32u; s > 0u; s >>= 1) {
			if (t < s) {
				for (uint k = 0u; k < NR; k++) {
					red[k * 64u + t] += red[k * 64u + t + s];
				}
			}
			barrier();
		}
		if (t < nr) {
			uint dst = (first + r0 + t) * p.ystride + p.yoff + o;
			float v = red[t * 64u];
			y[dst] = (p.mode & ACCUMULATE) != 0u ? y[dst] + v : v;
		}
		barrier();
	}
}
