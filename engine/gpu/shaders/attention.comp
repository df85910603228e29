#version 450
// Causal attention of one query head of one token over its sequence's
// cached keys and values, read through the paged block table: position j
// of the token's sequence is cache row blocks[blockOff + j/bs]*bs + j%bs.
// Keys are visited in tiles of 64 with an online softmax (running max and
// sum), so any context length fits in shared memory. GQA: query head h
// reads kv head h / (heads/kvHeads). With a sliding window w, keys before
// pos-w+1 are skipped.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KC { float kc[]; };
layout(std430, binding = 2) readonly buffer VC { float vc[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };
layout(std430, binding = 4) readonly buffer M { int meta[]; };
layout(push_constant) uniform P {
	uint heads, kvHeads, hd, window, blockSize;
	float scale;
	uint posOff, blockOffOff, blocksOff;
} p;

const uint TILE = 64u;
const uint MAXD = 4u; // head dims per invocation: head_dim <= 256
shared float qs[256];
shared float tile[TILE];

uint cacheRow(uint base, uint j) {
	return uint(meta[p.blocksOff + base + j / p.blockSize]) * p.blockSize + j % p.blockSize;
}

void main() {
	uint h = gl_WorkGroupID.x, tok = gl_WorkGroupID.y;
	uint t = gl_LocalInvocationID.x;
	uint qdim = p.heads * p.hd, kvdim = p.kvHeads * p.hd;
	uint kvh = h / (p.heads / p.kvHeads);
	uint pos = uint(meta[p.posOff + tok]);
	uint base = uint(meta[p.blockOffOff + tok]);
	uint start = (p.window > 0u && pos + 1u > p.window) ? pos + 1u - p.window : 0u;
	for (uint d = t; d < p.hd; d += 64u) {
		qs[d] = q[tok * qdim + h * p.hd + d];
	}
	barrier();
	float mx = -1.0 / 0.0, sum = 0.0;
	float acc[MAXD];
	for (uint i = 0u; i < MAXD; i++) {
		acc[i] = 0.0;
	}
	for (uint t0 = start; t0 <= pos; t0 += TILE) {
		uint j = t0 + t;
		float s = -1.0 / 0.0;
		if (j <= pos) {
			uint kb = cacheRow(base, j) * kvdim + kvh * p.hd;
			s = 0.0;
			for (uint d = 0u; d < p.hd; d++) {
				s += qs[d] * kc[kb + d];
			}
			s *= p.scale;
		}
		tile[t] = s;
		barrier();
		uint n = min(TILE, pos + 1u - t0);
		float tmax = tile[0];
		for (uint i = 1u; i < n; i++) {
			tmax = max(tmax, tile[i]);
		}
		float nmx = max(mx, tmax);
		float corr = exp_acc(mx - nmx); // 0 on the first tile (mx = -inf)
		barrier();
		tile[t] = t < n ? exp_acc(s - nmx) : 0.0;
		barrier();
		float tsum = 0.0;
		for (uint i = 0u; i < n; i++) {
			tsum += tile[i];
		}
		sum = sum * corr + tsum;
		for (uint i = 0u; i < MAXD; i++) {
			uint d = t + 64u * i;
			if (d < p.hd) {
				float a = acc[i] * corr;
				for (uint jj = 0u; jj < n; jj++) {
					a += tile[jj] * vc[cacheRow(base, t0 + jj) * kvdim + kvh * p.hd + d];
				}
				acc[i] = a;
			}
		}
		mx = nmx;
		barrier();
	}
	for (uint i = 0u; i < MAXD; i++) {
		uint d = t + 64u * i;
		if (d < p.hd) {
			o[tok * qdim + h * p.hd + d] = acc[i] / sum;
		}
	}
}
