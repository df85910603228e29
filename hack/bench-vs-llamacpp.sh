#!/usr/bin/env bash
# Benchmarks the engine against llama.cpp (node-llama-cpp, test/reference) on
# the same generated `mini` model, at Q8_0 and Q4_0, with the same thread
# count. Runs alternate (ours, llama.cpp, ours, ...) so drift on a shared
# machine hits both equally; the medians and their ratios are printed, with
# the decode roofline: memory bandwidth / weight bytes read per token.
#
#   hack/bench-vs-llamacpp.sh            # 1 thread, 5 rounds
#   THREADS=2 ROUNDS=3 hack/bench-vs-llamacpp.sh
#
# Environment: THREADS (1), ROUNDS (5), PROMPT (128), GEN (32), TYPES
# ("q8_0 q4_0"), BANDWIDTH_GBS (10, this machine class's read bandwidth),
# WORK (a temp dir; models are cached there between runs if set).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-5}
PROMPT=${PROMPT:-128}
GEN=${GEN:-32}
TYPES=${TYPES:-"q8_0 q4_0"}
BANDWIDTH_GBS=${BANDWIDTH_GBS:-10}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"

[[ -d test/reference/node_modules/node-llama-cpp ]] || make reference >/dev/null
go build -o "$WORK/moe" ./cmd/moe

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[process.argv[1]]))' "$1"; }

printf '%-6s %8s %10s %10s %7s %10s %10s %7s %12s\n' type threads "prefill" "llama.cpp" ratio "decode" "llama.cpp" ratio "roofline"
for type in $TYPES; do
  model="$WORK/mini-$type.gguf"
  [[ -f $model ]] || "$WORK/moe" gen-model --preset mini --type "$type" --out "$model" >/dev/null
  active=$("$WORK/moe" inspect --model "$model" --json | field activeBytesPerToken)
  : >"$WORK/ours.$type" ; : >"$WORK/ref.$type"
  for ((r = 0; r < ROUNDS; r++)); do
    "$WORK/moe" bench --model "$model" --threads "$THREADS" --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --json >>"$WORK/ours.$type"
    echo "{\"promptTokens\":$PROMPT,\"genTokens\":$GEN,\"threads\":$THREADS}" |
      (cd test/reference && node llama.mjs bench "$model") >>"$WORK/ref.$type"
  done
  op=$(while read -r l; do echo "$l" | field prefillTokensPerSecond; done <"$WORK/ours.$type" | median)
  od=$(while read -r l; do echo "$l" | field decodeTokensPerSecond; done <"$WORK/ours.$type" | median)
  rp=$(while read -r l; do echo "$l" | field prefillTokensPerSecond; done <"$WORK/ref.$type" | median)
  rd=$(while read -r l; do echo "$l" | field decodeTokensPerSecond; done <"$WORK/ref.$type" | median)
  awk -v t="$type" -v th="$THREADS" -v op="$op" -v rp="$rp" -v od="$od" -v rd="$rd" -v a="$active" -v bw="$BANDWIDTH_GBS" 'BEGIN {
    printf "%-6s %8d %10.1f %10.1f %6.2fx %10.1f %10.1f %6.2fx %8.1f tok/s\n", t, th, op, rp, op/rp, od, rd, od/rd, bw*1e9/a }'
done
echo "(tok/s, medians of $ROUNDS alternating rounds; prompt $PROMPT, $GEN decoded tokens; roofline = ${BANDWIDTH_GBS} GB/s / weight bytes per token)"
