#version 450
// RMSNorm of rows of x: out[r] = x[row] / sqrt(mean(x[row]^2) + eps) * w.
// One workgroup per output row. With gather set, output row r reads input
// row rows[rowsOff + r] (the output head normalises only the rows that
// need logits).
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };
layout(std430, binding = 3) readonly buffer R { int rows[]; };
layout(push_constant) uniform P { uint dim; float eps; uint gather; uint rowsOff; } p;
shared float part[64];
void main() {
	uint r = gl_WorkGroupID.x;
	uint src = p.gather != 0u ? uint(rows[p.rowsOff + r]) : r;
	uint t = gl_LocalInvocationID.x;
	float s = 0.0;
	for (uint i = t; i < p.dim; i += 64u) {
		float v = x[src * p.dim + i];
		s += v * v;
	}
	part[t] = s;
	barrier();
	for (uint n = 32u; n > 0u; n >>= 1) {
		if (t < n) {
			part[t] += part[t + n];
		}
		barrier();
	}
	float mean = part[0] / float(p.dim);
	float scale = 1.0 / sqrt(mean + p.eps);
	for (uint i = t; i < p.dim; i += 64u) {
		o[r * p.dim + i] = x[src * p.dim + i] * scale * w[i];
	}
}
