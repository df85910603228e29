#version 450
// Routes a batch's tokens to experts: router softmax, top-k (ties to the
// lower expert index) with the weights renormalised over the chosen k
// (the sum clamped to the smallest normal fp16, as llama.cpp does), then
// groups the k*T slots by expert so each expert's matmuls run over a
// contiguous list of its tokens, in token order.
//
// The route buffer (uints), for E experts and S = T*K slots:
//   [0, E)           tokens per expert
//   [E, 2E)          first slot of each expert
//   [2E, 2E+S)       the token of each slot
//   [2E+S, 2E+2S)    the weight of each slot (float bits)
//   [2E+2S, 2E+3S)   each token's k experts, by rank
//   [2E+3S, 2E+4S)   each token's k slots, by rank
//   [2E+4S, 2E+5S)   each token's k weights, by rank (float bits)
//   [2E+5S, 2E+5S+6E) indirect dispatch arguments (x, y, z) per expert:
//                    gridUp workgroups for its gate/up matmuls, then
//                    gridDown for its down matmul, or none without tokens
// With dense set (no router) every token takes expert 0 with weight 1.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer L { float logits[]; };
layout(std430, binding = 1) buffer R { uint route[]; };
layout(push_constant) uniform P { uint tokens, experts, topk, dense, gridUp, gridDown; } p;

const uint MAXE = 64u;

void main() {
	uint t = gl_LocalInvocationID.x;
	uint E = p.experts, K = p.topk, S = p.tokens * K;
	uint slotWeight = 2u * E + S, tokExpert = 2u * E + 2u * S, tokSlot = 2u * E + 3u * S, rankWeight = 2u * E + 4u * S;
	for (uint i = t; i < p.tokens; i += 64u) {
		if (p.dense != 0u) {
			route[tokExpert + i] = 0u;
			route[rankWeight + i] = floatBitsToUint(1.0);
			continue;
		}
		float pr[MAXE];
		float mx = logits[i * E];
		for (uint e = 1u; e < E; e++) {
			mx = max(mx, logits[i * E + e]);
		}
		float total = 0.0;
		for (uint e = 0u; e < E; e++) {
			pr[e] = exp_acc(logits[i * E + e] - mx);
			total += pr[e];
		}
		for (uint e = 0u; e < E; e++) {
			pr[e] /= total;
		}
		uvec2 taken = uvec2(0u);
		float chosen = 0.0;
		for (uint k = 0u; k < K; k++) {
			uint best = E;
			for (uint e = 0u; e < E; e++) {
				bool used = (taken[e / 32u] & (1u << (e % 32u))) != 0u;
				if (!used && (best == E || pr[e] > pr[best])) {
					best = e;
				}
			}
			taken[best / 32u] |= 1u << (best % 32u);
			route[tokExpert + i * K + k] = best;
			chosen += pr[best];
		}
		chosen = max(chosen, 6.103515625e-5);
		for (uint k = 0u; k < K; k++) {
			route[rankWeight + i * K + k] = floatBitsToUint(pr[route[tokExpert + i * K + k]] / chosen);
		}
	}
	memoryBarrierBuffer();
	barrier();
	// Count per expert, then the prefix sum.
	for (uint e = t; e < E; e += 64u) {
		uint n = 0u;
		for (uint s = 0u; s < S; s++) {
			n += route[tokExpert + s] == e ? 1u : 0u;
		}
		route[e] = n;
	}
	memoryBarrierBuffer();
	barrier();
	if (t == 0u) {
		uint off = 0u;
		for (uint e = 0u; e < E; e++) {
			route[E + e] = off;
			off += route[e];
		}
	}
	memoryBarrierBuffer();
	barrier();
	// Each expert's slots, in token order.
	for (uint e = t; e < E; e += 64u) {
		uint slot = route[E + e];
		for (uint s = 0u; s < S; s++) {
			if (route[tokExpert + s] == e) {
				route[2u * E + slot] = s / K;
				route[slotWeight + slot] = route[rankWeight + s];
				route[tokSlot + s] = slot;
				slot++;
			}
		}
		uint args = 2u * E + 5u * S + 6u * e;
		bool used = route[e] > 0u;
		route[args] = used ? p.gridUp : 0u;
		route[args + 1u] = 1u;
		route[args + 2u] = 1u;
		route[args + 3u] = used ? p.gridDown : 0u;
		route[args + 4u] = 1u;
		route[args + 5u] = 1u;
	}
}
