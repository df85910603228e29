#!/usr/bin/env bash
# Compiles the Vulkan backend's GLSL compute shaders to SPIR-V. The .spv
# files are generated artifacts, committed and embedded with go:embed;
# `make generate` runs this and `make verify` fails when they are stale.
# matmul.comp is compiled once per weight type. With an argument, it writes
# there instead (hack/verify-generated.sh compares the two).
set -euo pipefail
cd "$(dirname "$0")/.."
src=engine/gpu/shaders
out=${1:-engine/gpu/spv}
command -v glslc >/dev/null || { echo "gen-shaders: glslc not found (apt-get install glslc)" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/*.spv
flags=(--target-env=vulkan1.2 -O -Werror)
for f in "$src"/*.comp; do
	name=$(basename "$f" .comp)
	if [ "$name" = matmul ]; then
		for t in f32 f16 bf16 q8_0 q4_0; do
			glslc "${flags[@]}" -DTYPE_"${t^^}" "$f" -o "$out/matmul_$t.spv"
		done
	else
		glslc "${flags[@]}" "$f" -o "$out/$name.spv"
	fi
done
if command -v spirv-val >/dev/null; then
	for f in "$out"/*.spv; do spirv-val --target-env vulkan1.2 "$f"; done
fi
