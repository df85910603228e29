#!/usr/bin/env bash
# Fails when `go mod tidy` would change go.mod or go.sum (a missing or unused requirement,
# or a direct requirement marked // indirect). The files are restored either way, so the
# check changes nothing in the working tree.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp=$(mktemp -d)
cp go.mod go.sum "$tmp/"
restore() { cp "$tmp/go.mod" "$tmp/go.sum" .; rm -rf "$tmp"; }
trap restore EXIT

go mod tidy
mod_ok=true sum_ok=true
diff -u "$tmp/go.mod" go.mod > "$tmp/mod.diff" || mod_ok=false
diff -u "$tmp/go.sum" go.sum > "$tmp/sum.diff" || sum_ok=false
if ! $mod_ok || ! $sum_ok; then
  echo "stale: go.mod/go.sum are not tidy (run go mod tidy and commit the result):" >&2
  cat "$tmp/mod.diff" >&2
  head -n 20 "$tmp/sum.diff" >&2
  exit 1
fi
echo "go.mod and go.sum are tidy"
