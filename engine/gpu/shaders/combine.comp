#version 450
// Adds each token's weighted expert outputs to the residual stream:
// x[i] += sum over the token's k slots, in ascending expert order, of
// weight * ye[slot] (the CPU's order, so a token's sum does not depend on
// the rest of the batch). The sum starts from zero and is added to x once.
// One workgroup per token; the route buffer is moe_route's.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer YE { float ye[]; };
layout(std430, binding = 2) readonly buffer R { uint route[]; };
layout(push_constant) uniform P { uint dim, experts, topk, tokens; } p;

const uint MAXK = 8u;

void main() {
	uint i = gl_WorkGroupID.x;
	uint t = gl_LocalInvocationID.x;
	uint E = p.experts, K = p.topk, S = p.tokens * K;
	uint tokExpert = 2u * E + 2u * S, tokSlot = 2u * E + 3u * S, slotWeight = 2u * E + S;
	uint ex[MAXK], sl[MAXK];
	for (uint k = 0u; k < K; k++) {
		uint e = route[tokExpert + i * K + k], s = route[tokSlot + i * K + k];
		uint j = k;
		for (; j > 0u && ex[j - 1u] > e; j--) {
			ex[j] = ex[j - 1u];
			sl[j] = sl[j - 1u];
		}
		ex[j] = e;
		sl[j] = s;
	}
	for (uint d = t; d < p.dim; d += 64u) {
		float s = 0.0;
		for (uint k = 0u; k < K; k++) {
			s += uintBitsToFloat(route[slotWeight + sl[k]]) * ye[sl[k] * p.dim + d];
		}
		x[i * p.dim + d] += s;
	}
}
