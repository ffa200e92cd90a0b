#!/usr/bin/env bash
# bench.sh - what fanning out over shards costs, measured on loopback with real servers:
# one `embd serve` with the whole table (--threads 2) against two shard servers (--threads 1
# each, the same two cores), queried through fanout.mjs with the same vector and id queries.
#
#   deploy/shards/bench.sh [path/to/embd] [ROWS] [DIM]      (default build/embd 200000 256)
#
# Prints one table per setting (two-stage with oversample 16, and exact), one query at a time,
# the two sides interleaved. QUERIES (default 1000) queries per table.
# Leaves nothing behind (a temporary directory; the servers are stopped).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
embd=$(realpath "${1:-$here/../../build/embd}")
rows=${2:-200000}
dim=${3:-256}
queries=${QUERIES:-1000}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"
half=$((rows / 2))
"$embd" gen --kind clusters --rows "$rows" --dim "$dim" --seed 11 -o in.npy -q
"$embd" pack in.npy -o all.emb -q -e 0 >/dev/null
"$embd" pack in.npy -o s0.emb --rows "0:$half" -q -e 0 >/dev/null
"$embd" pack in.npy -o s1.emb --rows "$half:$rows" -q -e 0 >/dev/null
rm in.npy
serve() { # log threads store
  "$embd" serve --listen 127.0.0.1:0 --threads "$2" --shutdown-delay 0 "t=$3" 2>"$1" &
  pids+=($!)
}
serve all.log 2 all.emb
serve s0.log 1 s0.emb
serve s1.log 1 s1.emb
url() { # log -> base URL, once the server listens (at most 20 s)
  for _ in $(seq 1 200); do
    u=$(grep -o '"url":"http://127.0.0.1:[0-9]*"' "$1" | cut -d'"' -f4 || true)
    [ -n "$u" ] && { echo "$u"; return 0; }
    sleep 0.1
  done
  echo "no server in $1" >&2
  return 1
}
all=$(url all.log)
s0=$(url s0.log)
s1=$(url s1.log)
echo "embd $("$embd" --version | awk '{print $2}'), $(nproc) cores; $rows x $dim f16+q1 ($(du -m all.emb | cut -f1) MB), shards $half + $((rows - half)) rows"
for mode in "--oversample 16" --exact; do
  echo
  # shellcheck disable=SC2086 # $mode is two words or one
  node "$here/fanout.mjs" bench --table t --single "$all" --queries "$queries" $mode "$s0" "$s1"
done
