#version 450
// The k most likely tokens of each row of logits (k <= 16), best first,
// ties to the lower token id, as the CPU's sampler orders them. One
// workgroup per row: each invocation keeps its own top k of a strided
// part of the vocabulary in registers, then one invocation merges the 64
// lists. Output: k (token, logit bits) pairs per row.
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer L { float logits[]; };
layout(std430, binding = 1) writeonly buffer O { uint top[]; };
layout(push_constant) uniform P { uint vocab, k; } p;

const uint MAXK = 16u;
shared float sv[64][MAXK];
shared uint si[64][MAXK];

bool better(float a, uint ia, float b, uint ib) {
	return a > b || (a == b && ia < ib);
}

void main() {
	uint row = gl_WorkGroupID.x, t = gl_LocalInvocationID.x;
	float v[MAXK];
	uint id[MAXK];
	[[unroll]] for (uint j = 0u; j < MAXK; j++) {
		v[j] = -1.0 / 0.0;
		id[j] = 0xffffffffu;
	}
	for (uint i = t; i < p.vocab; i += 64u) {
		float x = logits[row * p.vocab + i];
		if (!better(x, i, v[MAXK - 1u], id[MAXK - 1u])) {
			continue;
		}
		// insert, keeping v sorted best first
		[[unroll]] for (uint j = MAXK - 1u; j > 0u; j--) {
			bool shift = better(x, i, v[j - 1u], id[j - 1u]);
			bool here = !shift && better(x, i, v[j], id[j]);
			v[j] = shift ? v[j - 1u] : (here ? x : v[j]);
			id[j] = shift ? id[j - 1u] : (here ? i : id[j]);
		}
		if (better(x, i, v[0], id[0])) {
			v[0] = x;
			id[0] = i;
		}
	}
	[[unroll]] for (uint j = 0u; j < MAXK; j++) {
		sv[t][j] = v[j];
		si[t][j] = id[j];
	}
	barrier();
	if (t != 0u) {
		return;
	}
	uint head[64];
	for (uint s = 0u; s < 64u; s++) {
		head[s] = 0u;
	}
	for (uint j = 0u; j < p.k; j++) {
		uint best = 0u;
		for (uint s = 1u; s < 64u; s++) {
			if (head[s] < MAXK && (head[best] >= MAXK || better(sv[s][head[s]], si[s][head[s]], sv[best][head[best]], si[best][head[best]]))) {
				best = s;
			}
		}
		top[2u * (row * p.k + j)] = si[best][head[best]];
		top[2u * (row * p.k + j) + 1u] = floatBitsToUint(sv[best][head[best]]);
		head[best]++;
	}
}
