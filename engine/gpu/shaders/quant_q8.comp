#version 450
// Quantizes float rows to Q8_0 activations exactly as the CPU does
// (tensor.Acts.Set): per 32-value block d = fp16(amax/127), q =
// roundEven(v * 127/amax). Quants are stored four to a uint, scales as
// floats (already fp16-rounded). One invocation per block.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Q { uint q[]; };
layout(std430, binding = 2) writeonly buffer D { float d[]; };
layout(push_constant) uniform P { uint blocks; } p;
void main() {
	uint b = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u;
	if (b >= p.blocks) {
		return;
	}
	float amax = 0.0;
	for (uint j = 0u; j < 32u; j++) {
		amax = max(amax, abs(x[32u * b + j]));
	}
	float id = amax != 0.0 ? 127.0 / amax : 0.0;
	d[b] = round_fp16(amax / 127.0);
	for (uint j = 0u; j < 8u; j++) {
		uint packed = 0u;
		for (uint k = 0u; k < 4u; k++) {
			int v = int(roundEven(x[32u * b + 4u * j + k] * id));
			packed |= (uint(v) & 0xffu) << (8u * k);
		}
		q[8u * b + j] = packed;
	}
}
