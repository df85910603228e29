#!/usr/bin/env bash
# The device check for the Vulkan backend, for a machine with an NVIDIA
# H100/H200 (or any Vulkan GPU) and its driver, but perhaps no Go and no
# Vulkan loader. Two halves:
#
#   hack/gpu-check.sh bundle   (here, with Go and apt): cross-builds a cgo-free
#       moe and the engine/gpu test binary (linked against the host's C
#       library, which purego's dlopen needs) and fetches Debian's libvulkan1
#       into dist/gpu-check/ (about 16 MiB);
#   hack/gpu-check.sh run      (on the GPU machine, from the repository root
#       with dist/gpu-check/ carried): checks GPU-vs-CPU parity with the
#       test binary, then benchmarks a generated model with Mixtral-8x7B
#       layer shapes (hidden 4096, ffn 14336, 8 experts, top-2, 32 heads,
#       8 kv heads; GPU_CHECK_LAYERS layers, default 2) and prints batch-1
#       decode and prefill tok/s, the device's measured memory bandwidth and
#       the fraction of it batch-1 decode reaches, then serves the model
#       (moe serve --device vulkan) and prints moe loadgen's throughput, TTFT
#       and ITL at 1, 16 and 64 streams. hack/calibrate-gpu reads the output
#       and prints the planner's predictions beside the measurements.
#
# The run half takes about 5 minutes on an H100 (the model is generated on
# the machine: 2 layers of Q8_0 are about 3.4 GB) and stops at 8.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=dist/gpu-check

bundle() {
	mkdir -p "$dir"
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags='-s -w' -o "$dir/moe" ./cmd/moe
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go test -c -trimpath -ldflags='-s -w' -o "$dir/gpu.test" ./engine/gpu
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download libvulkan1 >/dev/null)
	dpkg-deb -x "$tmp"/libvulkan1_*.deb "$tmp/x"
	cp -L "$tmp"/x/usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$dir/libvulkan.so.1"
	rm -rf "$tmp"
	du -sh "$dir"
}

run() {
	[[ -x $dir/moe && -x $dir/gpu.test ]] || { echo "gpu-check: no $dir bundle (run hack/gpu-check.sh bundle first)" >&2; exit 1; }
	moe=$PWD/$dir/moe
	# The loader: the system's, else the carried one.
	if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
		export MOE_VULKAN_LIBRARY=$PWD/$dir/libvulkan.so.1
	fi
	# NVIDIA's container toolkit puts the ICD here when graphics is among
	# the driver capabilities.
	for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
		if [[ -f $icd ]]; then
			export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
			break
		fi
	done
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
	echo "== devices"
	timeout 60 "$moe" devices
	echo "== memory bandwidth"
	bw=$(timeout 60 "$moe" devices --bandwidth vulkan | tee /dev/stderr | sed -n 's/.*bandwidth \([0-9.]*\) GB.*/\1/p')

	echo "== parity: GPU vs CPU logits on generated models (engine/gpu tests)"
	timeout 180 "$dir/gpu.test" -test.run 'TestLogitsMatchTheCPU|TestQuantizedAtLoad|TestHFCheckpoint|TestMixedBatch' -test.v 2>&1 |
		grep -E '^(=== RUN|--- |PASS|FAIL|ok)|device:|max \|Δlogit\|' || true

	layers=${GPU_CHECK_LAYERS:-2}
	work=$(mktemp -d)
	trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
	echo "== generating a $layers-layer Q8_0 model with Mixtral-8x7B layer shapes"
	timeout 240 "$moe" gen-model --out "$work/m.gguf" --vocab mistral --layers "$layers" --dim 4096 --ffn 14336 --experts 8 --top-k 2 \
		--heads 32 --kv-heads 8 --context 4096 --type q8_0 >/dev/null
	echo "== batch 1: decode and prefill (moe bench --device vulkan)"
	out=$(timeout 180 "$moe" bench --model "$work/m.gguf" --device vulkan --prompt-tokens 512 --gen-tokens 64 --json)
	echo "$out"
	decode=$(sed -n 's/.*"decodeTokensPerSecond":\([0-9.e+]*\).*/\1/p' <<<"$out")
	# Bytes batch-1 decode reads per token: every layer's attention and two
	# of its eight experts, the router and the output head, at Q8_0's 34
	# bytes per 32 weights.
	awk -v L="$layers" -v tps="$decode" -v bw="$bw" 'BEGIN {
		per = (4096*4096*2 + 4096*1024*2 + 2*3*4096*14336) * 34/32 + 8*4096*4
		bytes = L*per + 32000*4096*34/32
		printf "batch-1 decode reads %.2f GB per token: %.1f GB/s at %.2f tok/s, %.0f%% of the measured %.0f GB/s\n",
			bytes/1e9, bytes*tps/1e9, tps, 100*bytes*tps/(bw*1e9), bw }'
	echo "== serving: 1, 16 and 64 streams through moe serve --device vulkan and moe loadgen (throughput, TTFT, ITL)"
	"$moe" serve --model "$work/m.gguf" --device vulkan --port 18080 --max-num-seqs 64 >"$work/serve.log" 2>&1 &
	for _ in $(seq 120); do curl -sf http://127.0.0.1:18080/ready >/dev/null 2>&1 && break; sleep 1; done
	grep -o 'msg=ready.*' "$work/serve.log" || true
	for c in 1 16 64; do
		timeout 120 "$moe" loadgen --url http://127.0.0.1:18080 --concurrency "$c" --requests $((c < 8 ? 8 : c)) --max-tokens 64 --stream --json |
			sed "s/^/concurrency $c: /"
	done
	curl -s http://127.0.0.1:18080/metrics | grep -E '^(moe_engine_device|vllm:kv_cache_usage_perc|vllm:num_preemptions)' || true
	echo "== planner: go run ./hack/calibrate-gpu -accelerator h100-80gb < this output prints its prediction beside each figure"
}

case ${1:-} in
bundle) bundle ;;
run) run ;;
*) echo "usage: hack/gpu-check.sh bundle|run" >&2; exit 2 ;;
esac
