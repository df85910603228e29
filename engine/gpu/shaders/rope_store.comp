#version 450
// Rotates each token's query heads in place and its key heads into the KV
// cache, and copies its values there, as the CPU's applyRope and cache
// copy do. One workgroup per token; cos and sin come from the host (the
// same table the CPU computes), so both backends rotate by equal angles.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float k[]; };
layout(std430, binding = 2) readonly buffer V { float v[]; };
layout(std430, binding = 3) writeonly buffer KC { float kc[]; };
layout(std430, binding = 4) writeonly buffer VC { float vc[]; };
layout(std430, binding = 5) readonly buffer C { float cs[]; };
layout(std430, binding = 6) readonly buffer S { float sn[]; };
layout(std430, binding = 7) readonly buffer M { int meta[]; };
layout(push_constant) uniform P { uint heads, kvHeads, hd, adjacent, rowsOff; } p;

// pair returns the indices of rotation pair i within a head.
uvec2 pair(uint i, uint half_) {
	return p.adjacent != 0u ? uvec2(2u * i, 2u * i + 1u) : uvec2(i, i + half_);
}

void main() {
	uint tok = gl_WorkGroupID.x;
	uint t = gl_LocalInvocationID.x;
	uint half_ = p.hd / 2u;
	uint qdim = p.heads * p.hd, kvdim = p.kvHeads * p.hd;
	uint row = uint(meta[p.rowsOff + tok]);
	for (uint j = t; j < p.heads * half_; j += 64u) {
		uint h = j / half_, i = j % half_;
		uvec2 ix = pair(i, half_) + uvec2(tok * qdim + h * p.hd);
		float c = cs[tok * half_ + i], s = sn[tok * half_ + i];
		float x0 = q[ix.x], x1 = q[ix.y];
		q[ix.x] = x0 * c - x1 * s;
		q[ix.y] = x0 * s + x1 * c;
	}
	for (uint j = t; j < p.kvHeads * half_; j += 64u) {
		uint h = j / half_, i = j % half_;
		uvec2 off = pair(i, half_) + uvec2(h * p.hd);
		float c = cs[tok * half_ + i], s = sn[tok * half_ + i];
		float x0 = k[tok * kvdim + off.x], x1 = k[tok * kvdim + off.y];
		kc[row * kvdim + off.x] = x0 * c - x1 * s;
		kc[row * kvdim + off.y] = x0 * s + x1 * c;
	}
	for (uint j = t; j < kvdim; j += 64u) {
		vc[row * kvdim + j] = v[tok * kvdim + j];
	}
}
