// Shared by every shader of the engine's Vulkan backend. All shaders use
// one descriptor set layout of eight storage buffers (bindings 0-7; a pass
// binds a small dummy buffer where it needs fewer) and one 128-byte push
// constant range, so the host needs a single pipeline layout.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_8bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require

// fp16 bits -> float, exact (the conversion of a float16_t load is exact
// on every driver, but only storage is required, so decode by hand).
float half_to_float(uint h) {
	return unpackHalf2x16(h).x;
}

// round_fp16 rounds f to the nearest binary16 value (ties to even), as the
// CPU's RoundFP16 does; packHalf2x16's rounding is implementation-defined,
// so it is done with integer operations.
float round_fp16(float f) {
	uint u = floatBitsToUint(f);
	uint sign = u & 0x80000000u;
	uint a = u & 0x7fffffffu;
	if (a >= 0x7f800000u) { // inf or nan
		return f;
	}
	if (a >= 0x477ff000u) { // rounds to at least 65520: overflows to inf
		return uintBitsToFloat(sign | 0x7f800000u);
	}
	if (a < 0x38800000u) { // below the smallest normal half: a multiple of 2^-24
		float m = uintBitsToFloat(a) * 16777216.0; // exact: scale by 2^24
		float r = roundEven(m);
		return uintBitsToFloat(sign | floatBitsToUint(r / 16777216.0));
	}
	// normal: keep 10 mantissa bits, round the 13 dropped bits to even
	uint lsb = (a >> 13) & 1u;
	a = (a + 0xfffu + lsb) & ~0x1fffu;
	return uintBitsToFloat(sign | a);
}

// round_bf16 rounds f to bfloat16 (ties to even), as the CPU's RoundBF16.
float round_bf16(float f) {
	uint u = floatBitsToUint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) {
		return f;
	}
	u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
	return uintBitsToFloat(u);
}

// exp_acc is exp(x) to about one ulp. GLSL's exp may be far less precise
// (the Vulkan spec allows 3+2|x| ulp, and drivers use fast
// approximations), and a relative error of 1e-6 in a softmax weight is
// enough to move an activation across an fp16 or bf16 rounding boundary,
// which the CPU would not. Cody-Waite reduction by ln 2, then a degree-7
// polynomial on |r| <= ln2/2.
float exp_acc(float x) {
	if (x < -103.0) {
		return 0.0;
	}
	if (x > 88.7) {
		return uintBitsToFloat(0x7f800000u);
	}
	float k = roundEven(x * 1.44269504);
	float r = x - k * 0.693145752; // ln 2's high bits: k * it is exact
	r = r - k * 1.42860677e-6;      // and its low bits
	float p = 1.984127e-4;
	p = p * r + 1.3888889e-3;
	p = p * r + 8.3333338e-3;
	p = p * r + 4.1666668e-2;
	p = p * r + 1.6666667e-1;
	p = p * r + 0.5;
	p = p * r + 1.0;
	p = p * r + 1.0;
	return ldexp(p, int(k));
}
