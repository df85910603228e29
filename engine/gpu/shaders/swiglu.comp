#version 450
// g = silu(g) * u, elementwise over n values.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) buffer G { float g[]; };
layout(std430, binding = 1) readonly buffer U { float u[]; };
layout(push_constant) uniform P { uint n; } p;
void main() {
	uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256u;
	if (i >= p.n) {
		return;
	}
	float v = g[i];
	g[i] = v / (1.0 + exp_acc(-v)) * u[i];
}
