#!/usr/bin/env bash
# A benchmark, not a CI test: what prefix caching and prefix-affine routing do to the time
# to first token, measured with `moe loadgen` on loopback. Two parts:
#
#  1. Prefix caching: one `moe serve`, every request starting with the same synthetic
#     system prompt of about 1,000 tokens, with the prefix cache on and then off
#     (--no-prefix-caching).
#  2. Routing: PROMPTS system prompts, each request picking one at random, through
#     `moe gateway` in front of two `moe serve` replicas whose KV cache holds the blocks
#     of PROMPTS/2+1 system prompts: the share of one replica, with room for an uneven
#     split, but not all of them. With --routing prefix each system prompt lands on one
#     replica, whose cache keeps it; with --routing round-robin each replica sees every
#     system prompt and evicts them in turn. The engines restart between runs, so each
#     starts cold.
#
#   hack/bench-gateway-prefix.sh
#   PRESET=mini REQUESTS=64 hack/bench-gateway-prefix.sh
#
# Environment: PRESET (small), REQUESTS (64 per run), CONCURRENCY (2), PROMPTS (8), WORDS
# (words per system prompt, 660: about 1,000 tokens), MAX_TOKENS (4), THREADS (the CPUs;
# the two replicas of part 2 get half each), WORK (a temp dir).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PRESET=${PRESET:-small}
REQUESTS=${REQUESTS:-64}
CONCURRENCY=${CONCURRENCY:-2}
PROMPTS=${PROMPTS:-8}
WORDS=${WORDS:-660}
MAX_TOKENS=${MAX_TOKENS:-4}
THREADS=${THREADS:-$(nproc)}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"

go build -o "$WORK/moe" ./cmd/moe
model=$WORK/$PRESET.gguf
[[ -f $model ]] || "$WORK/moe" gen-model --preset "$PRESET" --out "$model" >/dev/null

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT
port=$(( 20000 + RANDOM % 20000 ))

# start NAME PORT PROBE ARGS...: runs `moe ARGS` in the background and waits for PROBE.
start() {
  local name=$1 p=$2 probe=$3
  shift 3
  "$WORK/moe" "$@" 2> "$WORK/$name.log" &
  pids+=($!)
  for _ in $(seq 600); do
    curl -fsS "http://127.0.0.1:$p$probe" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "bench: $name did not come up; log:" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}

engine() { # NAME PORT THREADS ARGS...
  local name=$1 p=$2 threads=$3
  shift 3
  start "$name" "$p" /ready serve --model "$model" --served-model-name m --host 127.0.0.1 --port "$p" \
    --threads "$threads" --max-num-seqs 4 "$@"
}

json() { awk -F': ' -v k="\"$2\"" '$1 ~ k {gsub(/[ ,]/, "", $2); print $2; exit}' "$1"; }
ttft() { # FILE -> "p50 p95 mean" in ms, from loadgen's ttftSeconds
  awk '/"ttftSeconds"/ {on=1} on && /"p50"/ {gsub(/[ ,]/, "", $2); p50=$2} on && /"p95"/ {gsub(/[ ,]/, "", $2); p95=$2}
    on && /"mean"/ {gsub(/[ ,]/, "", $2); print p50*1000, p95*1000, $2*1000; exit}' FS=': ' "$1"
}
counter() { # URL NAME -> the counter's value
  curl -fsS "$1/metrics" | awk -v name="$2" 'index($1, name "{") == 1 {print $2; exit}'
}

load() { # URL PROMPTS OUT
  "$WORK/moe" loadgen --url "$1" --chat --stream --concurrency "$CONCURRENCY" --requests "$REQUESTS" \
    --system-prompts "$2" --system-prompt-words "$WORDS" --max-tokens "$MAX_TOKENS" --json > "$3"
  local errors
  errors=$(json "$3" errors)
  if [[ $errors != 0 ]]; then
    echo "bench: $errors requests failed: $(cat "$3")" >&2
    exit 1
  fi
}

echo "[bench] $PRESET model, $REQUESTS requests per run at concurrency $CONCURRENCY, system prompts of $WORDS words, $MAX_TOKENS tokens out"

# 1. Prefix caching on and off.
declare -A part1
for mode in on off; do
  flags=()
  [[ $mode == off ]] && flags=(--no-prefix-caching)
  p=$((port++))
  engine "engine-$mode" "$p" "$THREADS" "${flags[@]}"
  load "http://127.0.0.1:$p" 1 "$WORK/cache-$mode.json"
  part1[$mode]="$(ttft "$WORK/cache-$mode.json") $(json "$WORK/cache-$mode.json" promptTokens) $(counter "http://127.0.0.1:$p" vllm:prefix_cache_hits_total) $(counter "http://127.0.0.1:$p" vllm:prefix_cache_queries_total)"
  stop_all
done

# 2. Two replicas behind the gateway, prefix-affine against round-robin. Each replica's
# cache: the blocks of PROMPTS/2+1 requests.
per_prompt=$(( $(json "$WORK/cache-on.json" promptTokens) / REQUESTS ))
kv=$(( (per_prompt + MAX_TOKENS + 16) * (PROMPTS / 2 + 1) ))
declare -A part2 decisions
for routing in prefix round-robin; do
  a=$((port++)) b=$((port++)) g=$((port++))
  engine "replica-a-$routing" "$a" $(( (THREADS + 1) / 2 )) --kv-cache-tokens "$kv"
  engine "replica-b-$routing" "$b" $(( (THREADS + 1) / 2 )) --kv-cache-tokens "$kv"
  start "gateway-$routing" "$g" /health gateway --host 127.0.0.1 --port "$g" --routing "$routing" --scrape-interval 500ms \
    --backend "m=http://127.0.0.1:$a" --backend "m=http://127.0.0.1:$b"
  load "http://127.0.0.1:$g" "$PROMPTS" "$WORK/routing-$routing.json"
  hits=$(awk -v x="$(counter "http://127.0.0.1:$a" vllm:prefix_cache_hits_total)" -v y="$(counter "http://127.0.0.1:$b" vllm:prefix_cache_hits_total)" 'BEGIN { print x + y }')
  queries=$(awk -v x="$(counter "http://127.0.0.1:$a" vllm:prefix_cache_queries_total)" -v y="$(counter "http://127.0.0.1:$b" vllm:prefix_cache_queries_total)" 'BEGIN { print x + y }')
  part2[$routing]="$(ttft "$WORK/routing-$routing.json") $hits $queries"
  decisions[$routing]=$(curl -fsS "http://127.0.0.1:$g/metrics" | awk '/^moe_gateway_routing_decisions_total/ {match($0, /decision="[^"]+"/); printf "%s%s %s", sep, substr($0, RSTART + 10, RLENGTH - 11), $NF; sep=", "}')
  stop_all
done

report() { # LABEL FIELDS: p50 p95 mean hits queries
  local label=$1 p50 p95 mean hits queries rate
  read -r p50 p95 mean hits queries <<<"$2"
  rate=$(awk -v h="$hits" -v q="$queries" 'BEGIN { if (q > 0) printf "%.0f%%", 100 * h / q; else printf "-" }')
  printf '%-14s %12.1f %12.1f %13.1f %9s\n' "$label" "$p50" "$p95" "$mean" "$rate"
}
ratio() { # WHAT A B: A's p50 and mean over B's
  local a50 a95 amean b50 b95 bmean
  read -r a50 a95 amean _ <<<"$2"
  read -r b50 b95 bmean _ <<<"$3"
  awk -v what="$1" -v a="$a50" -v b="$b50" -v am="$amean" -v bm="$bmean" 'BEGIN { printf "%s: TTFT p50 %.2fx, mean %.2fx\n", what, a / b, am / bm }'
}
header() { printf '%-14s %12s %12s %13s %9s\n' "$1" "TTFT p50 ms" "TTFT p95 ms" "TTFT mean ms" "hit rate"; }

printf '\n1. One replica, every request with the same system prompt (%d prompt tokens a request)\n' "$per_prompt"
header "prefix cache"
report on "$(cut -d' ' -f1-3,5- <<<"${part1[on]}")"
report off "$(cut -d' ' -f1-3,5- <<<"${part1[off]}")"
ratio "without the cache / with it" "${part1[off]}" "${part1[on]}"

printf '\n2. Two replicas behind moe gateway (KV cache %d tokens each), %d system prompts\n' "$kv" "$PROMPTS"
header routing
report prefix "${part2[prefix]}"
report round-robin "${part2[round-robin]}"
echo "the gateway's decisions: prefix routing ${decisions[prefix]}; round-robin ${decisions[round-robin]}"
ratio "round-robin / prefix-affine" "${part2[round-robin]}" "${part2[prefix]}"
