#!/usr/bin/env bash
# Peak resident memory of on-load quantization: a generated ~1 GB F16 Mixtral-shaped model,
# as a Hugging Face checkpoint and as GGUF, loaded with --quantization int8 / int4, beside the
# same model quantized ahead of time (moe quantize). Needs GNU time (/usr/bin/time).
#   hack/hf-load-memory.sh [workdir]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=${1:-$(mktemp -d)}
moe="$work/moe"
go build -o "$moe" ./cmd/moe
[ -f "$work/f16.gguf" ] || "$moe" gen-model --preset mini --layers 5 --type f16 --out "$work/f16.gguf"
[ -d "$work/hf" ] || "$moe" export-hf --in "$work/f16.gguf" --out "$work/hf" --max-shard-bytes 500000000
[ -f "$work/q8.gguf" ] || "$moe" quantize --in "$work/f16.gguf" --out "$work/q8.gguf" --type q8_0
[ -f "$work/q4.gguf" ] || "$moe" quantize --in "$work/f16.gguf" --out "$work/q4.gguf" --type q4_0
peak() { # model quantization -> "peak MiB, seconds"
	/usr/bin/time -f '%M %e' "$moe" logits --model "$1" --quantization "$2" --tokens 1,2,3 --threads 2 2>&1 >/dev/null |
		tail -1 | awk '{printf "%6.0f MiB peak RSS, %5.1fs", $1/1024, $2}'
}
printf 'F16 checkpoint: %s MB (HF shards), %s MB (GGUF)\n' \
	"$(du -cb "$work"/hf/*.safetensors | tail -1 | awk '{printf "%.0f", $1/1e6}')" "$(stat -c %s "$work/f16.gguf" | awk '{printf "%.0f", $1/1e6}')"
printf 'quantized size: %s MiB (Q8_0), %s MiB (Q4_0)\n' \
	"$(stat -c %s "$work/q8.gguf" | awk '{printf "%.0f", $1/1048576}')" "$(stat -c %s "$work/q4.gguf" | awk '{printf "%.0f", $1/1048576}')"
echo "HF  F16 -> int8:          $(peak "$work/hf" int8)"
echo "GGUF F16 -> int8:         $(peak "$work/f16.gguf" int8)"
echo "GGUF Q8_0 (ahead of time): $(peak "$work/q8.gguf" auto)"
echo "HF  F16 -> int4:          $(peak "$work/hf" int4)"
echo "GGUF Q4_0 (ahead of time): $(peak "$work/q4.gguf" auto)"
echo "HF  F16, no conversion:   $(peak "$work/hf" auto)"
