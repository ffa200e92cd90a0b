#!/usr/bin/env bash
# curl.sh EMBD - the README's curl examples against a real server.
#
# Packs the demo table (embd gen --kind demo + embd pack), starts `embd serve` on 127.0.0.1
# with port 0 (the port is read from the "listening url=" log line), runs one curl per
# endpoint, checks each output with grep, stops the server with SIGTERM and checks it exits 0.
# Prints "N passed, N failed"; exits 1 when a check failed, 2 on a usage error.
set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 EMBD   (the embd executable)" >&2
  exit 2
fi
embd=$1
command -v curl >/dev/null || { echo "curl.sh: curl is not installed" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/embd-curl-XXXXXX")
pid=
cleanup() {
  if [ -n "$pid" ] && alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# alive PID: the process runs (an exited but unreaped child is a zombie: not alive).
alive() {
  [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
  failed=$((failed + 1))
  echo "FAIL: $*"
}

# check NAME PATTERN CURL-ARGS...: runs curl -fsS (with a 30 s limit) and greps its output.
check() {
  local name=$1 pattern=$2
  shift 2
  local out
  if ! out=$(curl -fsS --max-time 30 "$@" 2>&1); then
    fail "$name: curl failed: $(printf '%s' "$out" | head -c 300)"
    return
  fi
  if printf '%s' "$out" | grep -Eq -- "$pattern"; then
    pass
  else
    fail "$name: output does not match /$pattern/: $(printf '%s' "$out" | head -c 300)"
  fi
}

# check_not NAME PATTERN CURL-ARGS...: the output must not match.
check_not() {
  local name=$1 pattern=$2
  shift 2
  local out
  if ! out=$(curl -fsS --max-time 30 "$@" 2>&1); then
    fail "$name: curl failed: $(printf '%s' "$out" | head -c 300)"
    return
  fi
  if printf '%s' "$out" | grep -Eq -- "$pattern"; then
    fail "$name: output matches /$pattern/: $(printf '%s' "$out" | head -c 300)"
  else
    pass
  fi
}

# check_status NAME STATUS CURL-ARGS...: the HTTP status (no -f: errors are expected).
check_status() {
  local name=$1 want=$2
  shift 2
  local got
  got=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "$@" 2>&1)
  if [ "$got" = "$want" ]; then pass; else fail "$name: status $got, want $want"; fi
}

# ---- the demo store ----
if ! "$embd" gen --kind demo -o "$tmp/demo.txt" -q >/dev/null 2>&1 ||
  ! "$embd" pack "$tmp/demo.txt" -o "$tmp/demo.emb" -q >/dev/null 2>&1; then
  echo "FAIL: cannot generate and pack the demo"
  echo "0 passed, 1 failed"
  exit 1
fi

# ---- the server ----
"$embd" serve --listen 127.0.0.1:0 --log-format text --shutdown-delay 0 --threads 2 \
  "$tmp/demo.emb" 2>"$tmp/serve.log" &
pid=$!
base=
for _ in $(seq 1 200); do # at most 20 s
  base=$(sed -n 's/.*listening url=\(http:\/\/127\.0\.0\.1:[0-9][0-9]*\).*/\1/p' "$tmp/serve.log" | head -n 1)
  [ -n "$base" ] && break
  alive "$pid" || break
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "FAIL: embd serve did not start:"
  cat "$tmp/serve.log"
  echo "0 passed, 1 failed"
  exit 1
fi

json=(-H 'Content-Type: application/json')

# ---- one curl per endpoint, as the README shows them ----
check "healthz" '^\{"status":"ok"\}$' "$base/healthz"
check "readyz" '^\{"status":"ready"\}$' "$base/readyz"
check "metrics" '^embd_build_info\{version="[^"]+",simd="[^"]+"\} 1$' "$base/metrics"
check "metrics table rows" '^embd_table_rows\{table="demo"\} 314$' "$base/metrics"
# The live /metrics page passes promtool (from Debian's prometheus package, fetched by
# promtool.sh), after some traffic so every family has samples.
if promtool=$("$(dirname "$0")/promtool.sh" 2>/dev/null) && [ -x "$promtool" ]; then
  curl -fsS --max-time 30 "$base/v1/tables/demo/rows/1" >/dev/null 2>&1
  curl -fsS --max-time 30 "$base/metrics" >"$tmp/metrics.txt" 2>&1
  if out=$("$promtool" check metrics <"$tmp/metrics.txt" 2>&1) && [ -z "$out" ]; then
    pass
  else
    fail "promtool check metrics on the live /metrics: $out"
  fi
else
  fail "promtool could not be obtained (tests/server/promtool.sh)"
fi
check "openapi.yaml" '^openapi: 3\.1' "$base/openapi.yaml"
check "tables" '"tables":\[\{"name":"demo","rows":314,"dim":64' "$base/v1/tables"
check "table" '"checksum":"[0-9a-f]{8}"' "$base/v1/tables/demo"
check "table etag" '^[Ee][Tt]ag: "[0-9a-f]{8}' -D - -o /dev/null "$base/v1/tables/demo"
check "row" '^\{"id":42,"key":"[^"]+","vector":\[' "$base/v1/tables/demo/rows/42"
check "row base64 f16" '"vector":"[A-Za-z0-9+/]{171}="' "$base/v1/tables/demo/rows/42?encoding=base64&dtype=f16"
check "key" '^\{"id":0,"key":"apple","vector":\[' "$base/v1/tables/demo/keys/apple"
check "key percent-encoded" '"key":"apple"' "$base/v1/tables/demo/keys/%61pple"
check "HEAD row" '^HTTP/1\.1 200' -I "$base/v1/tables/demo/rows/42"
check "gather" '"missing":\[2\]\}$' "$base/v1/tables/demo/gather" "${json[@]}" -d '{"ids": [1, 2, 9999]}'
check "gather pooled" '^\{"vector":\[[^]]+\],"missing":\[\]\}$' "$base/v1/tables/demo/gather" \
  "${json[@]}" -d '{"keys": ["apple", "banana", "mercury"], "pool": "mean", "weights": [3, 2, 1]}'
magic=$(curl -fsS --max-time 30 "$base/v1/tables/demo/gather" "${json[@]}" \
  -H 'Accept: application/octet-stream' -d '{"ids": [0, 1]}' 2>&1 | head -c 4)
if [ "$magic" = "EMBG" ]; then pass; else fail "gather binary: starts with '$magic', not EMBG"; fi
size=$(curl -fsS --max-time 30 "$base/v1/tables/demo/gather" "${json[@]}" \
  -H 'Accept: application/octet-stream' -d '{"ids": [0, 1]}' 2>/dev/null | wc -c)
if [ "$size" -eq $((16 + 2 * 64 * 4)) ]; then pass; else fail "gather binary: $size bytes"; fi
check "search key" '^\{"results":\[\{"id":[0-9]+,"key":"[^"]+","score":' \
  "$base/v1/tables/demo/search" "${json[@]}" -d '{"key": "apple", "k": 5}'
check_not "search key excludes itself" '"key":"apple"' \
  "$base/v1/tables/demo/search" "${json[@]}" -d '{"key": "apple", "k": 5}'
check "search exact l2" '"metric":"l2","k":3,"mode":"exact"\}$' "$base/v1/tables/demo/search" \
  "${json[@]}" -d '{"key": "mercury", "metric": "l2", "k": 3, "exact": true}'
check "search pooled" '"mode":"two_stage"' "$base/v1/tables/demo/search" "${json[@]}" \
  -d '{"keys": ["apple", "banana"], "exclude_ids": [6, 17], "k": 10, "oversample": 8}'
check "reload" '^\{"reloaded":\["demo"\],"failed":\[\]\}$' -X POST "$base/v1/admin/reload"
check "request id echoed" '^[Xx]-[Rr]equest-[Ii]d: curl-sh-1' -D - -o /dev/null \
  -H 'X-Request-Id: curl-sh-1' "$base/healthz"

# ---- errors: status and problem type ----
check_status "unknown row" 404 "$base/v1/tables/demo/rows/9999"
check_status "unknown table" 404 "$base/v1/tables/nope"
check_status "wrong method" 405 "$base/v1/tables/demo/search"
check_status "bad k" 422 "$base/v1/tables/demo/search" "${json[@]}" -d '{"key": "apple", "k": 0}'
check_status "malformed JSON" 400 "$base/v1/tables/demo/search" "${json[@]}" -d '{"key":'
check_status "text/plain" 415 "$base/v1/tables/demo/search" -H 'Content-Type: text/plain' -d '{}'
problem=$(curl -sS --max-time 30 "$base/v1/tables/demo/keys/no-such-key" 2>&1)
if printf '%s' "$problem" | grep -q '"type":"urn:embd:problem:key-not-found"'; then pass; else
  fail "problem type: $problem"
fi

# ---- stop: SIGTERM drains and exits 0 ----
kill -TERM "$pid"
status=
for _ in $(seq 1 300); do # at most 30 s
  if ! alive "$pid"; then
    wait "$pid"
    status=$?
    break
  fi
  sleep 0.1
done
pid_done=$pid
pid=
if [ -z "$status" ]; then
  kill -KILL "$pid_done" 2>/dev/null
  wait "$pid_done" 2>/dev/null
  fail "embd serve did not exit within 30 s of SIGTERM"
elif [ "$status" -ne 0 ]; then
  fail "embd serve exited $status after SIGTERM"
else
  pass
fi
if grep -q 'stopped cleanly' "$tmp/serve.log"; then pass; else
  fail "no 'stopped cleanly' in the log: $(tail -n 3 "$tmp/serve.log")"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
