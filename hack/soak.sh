#!/usr/bin/env bash
# A soak benchmark, not a CI test: `moe serve` on the generated `small` model under
# CONCURRENCY streaming clients (`moe loadgen`) for DURATION, with the server's /metrics
# sampled every INTERVAL. It passes when no request failed and, after WARMUP, the resident
# memory and the goroutines stay flat: the highest sample after the warm-up is at most
# TOLERANCE_PCT above the first one (memory) and TOLERANCE_GOROUTINES above it (goroutines).
#
#   hack/soak.sh                              # 30 minutes at 64 streams
#   DURATION=3m WARMUP=1m hack/soak.sh        # a quick look
#
# Environment: DURATION (30m), CONCURRENCY (64), WARMUP (2m), INTERVAL (30s),
# MAX_TOKENS (64), THREADS (the CPUs), TOLERANCE_PCT (10), TOLERANCE_GOROUTINES (16),
# WORK (a temp dir: the model, the samples in samples.tsv and loadgen's result.json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-30m}
CONCURRENCY=${CONCURRENCY:-64}
WARMUP=${WARMUP:-2m}
INTERVAL=${INTERVAL:-30s}
MAX_TOKENS=${MAX_TOKENS:-64}
THREADS=${THREADS:-$(nproc)}
TOLERANCE_PCT=${TOLERANCE_PCT:-10}
TOLERANCE_GOROUTINES=${TOLERANCE_GOROUTINES:-16}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"

seconds() { # 30s, 2m, 1h -> seconds
  local v=$1
  case $v in
    *h) echo $(( ${v%h} * 3600 )) ;;
    *m) echo $(( ${v%m} * 60 )) ;;
    *s) echo "${v%s}" ;;
    *) echo "$v" ;;
  esac
}

go build -o "$WORK/moe" ./cmd/moe
[[ -f $WORK/small.gguf ]] || "$WORK/moe" gen-model --preset small --out "$WORK/small.gguf" >/dev/null
port=$(( 20000 + RANDOM % 20000 ))
url=http://127.0.0.1:$port
"$WORK/moe" serve --model "$WORK/small.gguf" --host 127.0.0.1 --port "$port" --threads "$THREADS" \
  --served-model-name small --max-num-seqs "$CONCURRENCY" 2> "$WORK/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -fsS "$url/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$url/ready" >/dev/null || { echo "soak: the server did not become ready; log:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

metric() { awk -v name="$1" '$1 == name || index($1, name "{") == 1 {print $2; exit}' <<<"$2"; }
sample() {
  local m
  m=$(curl -fsS "$url/metrics")
  printf '%s\t%s\t%s\t%s\n' "$(( $(date +%s) - start ))" "$(metric process_resident_memory_bytes "$m")" \
    "$(metric go_goroutines "$m")" "$(metric vllm:num_requests_running "$m")"
}

echo "[soak] $CONCURRENCY streams for $DURATION on the small model ($THREADS threads); samples every $INTERVAL in $WORK/samples.tsv" >&2
start=$(date +%s)
"$WORK/moe" loadgen --url "$url" --concurrency "$CONCURRENCY" --duration "$DURATION" --stream \
  --max-tokens "$MAX_TOKENS" --json > "$WORK/result.json" &
load=$!
printf 'seconds\trss_bytes\tgoroutines\trunning\n' > "$WORK/samples.tsv"
while kill -0 "$load" 2>/dev/null; do
  sample >> "$WORK/samples.tsv" || true
  sleep "$(seconds "$INTERVAL")"
done
wait "$load"
sample >> "$WORK/samples.tsv"

# The verdict, from the samples after the warm-up and loadgen's error count.
warm=$(seconds "$WARMUP")
errors=$(awk -F': ' '/"errors"/ {gsub(/[ ,]/, "", $2); print $2; exit}' "$WORK/result.json")
requests=$(awk -F': ' '/"requests"/ {gsub(/[ ,]/, "", $2); print $2; exit}' "$WORK/result.json")
tokps=$(awk -F': ' '/"outputTokensPerSecond"/ {gsub(/[ ,]/, "", $2); print $2; exit}' "$WORK/result.json")
read -r rss0 rssmax g0 gmax n < <(awk -F'\t' -v warm="$warm" 'NR > 1 && $1 >= warm && $2 != "" {
    if (!seen) { rss0 = $2; g0 = $3; seen = 1 }
    if ($2 > rssmax) rssmax = $2
    if ($3 > gmax) gmax = $3
    n++
  } END { printf "%d %d %d %d %d\n", rss0, rssmax, g0, gmax, n }' "$WORK/samples.tsv")
growth=$(awk -v a="$rss0" -v b="$rssmax" 'BEGIN { printf "%.1f", (a > 0 ? (b - a) * 100 / a : 0) }')
printf '[soak] %s requests, %s errors, %s output tok/s; after the %s warm-up (%s samples): RSS %d -> max %d MiB (+%s%%), goroutines %d -> max %d\n' \
  "$requests" "$errors" "$tokps" "$WARMUP" "$n" $(( rss0 >> 20 )) $(( rssmax >> 20 )) "$growth" "$g0" "$gmax"
status=0
if [[ $errors != 0 ]]; then
  echo "[soak] FAIL: $errors requests failed" >&2; status=1
fi
if (( n < 2 )); then
  echo "[soak] FAIL: fewer than 2 samples after the warm-up: run longer than WARMUP" >&2; status=1
fi
if awk -v g="$growth" -v t="$TOLERANCE_PCT" 'BEGIN { exit !(g > t) }'; then
  echo "[soak] FAIL: resident memory grew ${growth}% after the warm-up (tolerance ${TOLERANCE_PCT}%)" >&2; status=1
fi
if (( gmax - g0 > TOLERANCE_GOROUTINES )); then
  echo "[soak] FAIL: goroutines grew from $g0 to $gmax after the warm-up" >&2; status=1
fi
exit $status
