#!/usr/bin/env bash
# loadtest/http/run.sh - embd serve under wrk on loopback, next to nginx serving a static file of
# the size of a single-row lookup response, with the same wrk command. See loadtest/README.md.
#
#   loadtest/http/run.sh [--duration S] [--out results.json] [--embd PATH] [--loops N]
#                        [--threads N] [--connections N] [--wrk-threads N] [--rows N] [--dim N]
#                        [--pairs N]
#
# Installs wrk and nginx (Debian packages) when missing, generates a clustered table in a temp
# dir, starts `embd serve` and nginx on free 127.0.0.1 ports, runs every scenario for S seconds,
# prints a table and writes the JSON file. Everything it started is stopped and the temp dir
# removed on exit, error or signal. Only 127.0.0.1 is ever contacted.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

DURATION=10
OUT=results.json
EMBD=${EMBD:-}
NPROC=$(nproc)
LOOPS=$NPROC       # embd event loops; nginx gets as many worker processes
THREADS=$NPROC     # embd worker threads (searches, large gathers)
CONNS=64
WRK_THREADS=2
ROWS=100000
DIM=128
PAIRS=3            # single-row lookups and nginx, run alternately this many times

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --embd) EMBD=$2; shift 2 ;;
    --loops) LOOPS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --wrk-threads) WRK_THREADS=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --dim) DIM=$2; shift 2 ;;
    --pairs) PAIRS=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- cleanup: runs on every exit path ------------------------------------------------------
WORK=$(mktemp -d /tmp/embd-loadtest.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- tools ---------------------------------------------------------------------------------
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    log "installing wrk and nginx-light (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y wrk nginx-light >/dev/null 2>&1 || {
        apt-get update >/dev/null && apt-get install -y wrk nginx-light >/dev/null
    }
fi
for t in wrk nginx curl awk; do command -v $t >/dev/null || { echo "run.sh: $t missing" >&2; exit 1; }; done

if [ -z "$EMBD" ]; then
    if [ -x "$ROOT/build/embd" ]; then
        EMBD="$ROOT/build/embd"
    else
        log "building embd (Release) in $WORK/build"
        cmake -S "$ROOT" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
        make -C "$WORK/build" -j"$NPROC" embd >/dev/null
        EMBD="$WORK/build/embd"
    fi
fi
[ -x "$EMBD" ] || { echo "run.sh: no embd at $EMBD" >&2; exit 1; }

# Every server runs under `timeout`, so a run killed with SIGKILL still leaves nothing behind
# for long: the budget covers every scenario plus setup.
NSCEN=$((14 + 2 * PAIRS))
BUDGET=$((NSCEN * (DURATION + 15) + 300))

# ---- data ----------------------------------------------------------------------------------
log "generating $ROWS x $DIM clustered rows, packing f16+q1 with keys"
"$EMBD" gen --kind clusters --rows "$ROWS" --dim "$DIM" -o "$WORK/t.npy" --keys-out "$WORK/keys.txt" >/dev/null 2>&1
"$EMBD" pack "$WORK/t.npy" -o "$WORK/t.emb" --dtype f16+q1 --keys "$WORK/keys.txt" -q >/dev/null
rm -f "$WORK/t.npy"

# ---- embd serve ----------------------------------------------------------------------------
timeout -s TERM "$BUDGET" "$EMBD" serve --listen 127.0.0.1:0 --threads "$THREADS" --loops "$LOOPS" \
    --shutdown-delay 0 --log-format text --log-level warn --timeout 60 "$WORK/t.emb" \
    2>"$WORK/embd.log" &
PIDS+=($!)
EMBD_TIMEOUT_PID=$!
# --log-level warn hides the "listening" line; ask the kernel for the port instead.
EPORT=
for _ in $(seq 100); do
    EPID=$(pgrep -P "$EMBD_TIMEOUT_PID" -x embd || true)
    if [ -n "$EPID" ]; then
        EPORT=$(ss -Hltnp 2>/dev/null | awk -v pid="pid=$EPID," '$0 ~ pid { sub(/.*:/, "", $4); print $4; exit }')
        [ -n "$EPORT" ] && curl -fs "http://127.0.0.1:$EPORT/readyz" >/dev/null 2>&1 && break
        EPORT=
    fi
    kill -0 "$EMBD_TIMEOUT_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$EPORT" ] || { echo "run.sh: embd did not start:" >&2; cat "$WORK/embd.log" >&2; exit 1; }
EURL="http://127.0.0.1:$EPORT"
log "embd serve pid $EPID on $EURL (--loops $LOOPS --threads $THREADS)"

# ---- the static file: a single-row response, padded to the mean response size --------------
mkdir -p "$WORK/www"
total=0
for i in $(seq 0 $((ROWS / 64)) $((ROWS - 1)) | head -64); do
    n=$(curl -fs "$EURL/v1/tables/t/rows/$i" | wc -c)
    total=$((total + n))
done
cnt=$(seq 0 $((ROWS / 64)) $((ROWS - 1)) | head -64 | wc -l)
STATIC_SIZE=$(( (total + cnt / 2) / cnt ))
curl -fs "$EURL/v1/tables/t/rows/0" >"$WORK/www/row.json"
have=$(wc -c <"$WORK/www/row.json")
if [ "$have" -lt "$STATIC_SIZE" ]; then
    printf '%*s' $((STATIC_SIZE - have)) '' >>"$WORK/www/row.json"   # trailing spaces: still JSON
else
    truncate -s "$STATIC_SIZE" "$WORK/www/row.json"
fi
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/row.json"

# ---- nginx ---------------------------------------------------------------------------------
NPORT=
for _ in $(seq 20); do
    p=$((20000 + RANDOM % 40000))
    ss -Hltn "sport = :$p" | grep -q . && continue
    sed -e "s#@DIR@#$WORK#g; s#@PORT@#$p#g; s#@WORKERS@#$LOOPS#g" "$HERE/nginx.conf.in" >"$WORK/nginx.conf"
    timeout -s TERM "$BUDGET" nginx -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf" \
        2>>"$WORK/nginx-error.log" &
    npid=$!
    for _ in $(seq 50); do
        if curl -fs "http://127.0.0.1:$p/row.json" >/dev/null 2>&1; then NPORT=$p; break; fi
        kill -0 "$npid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -n "$NPORT" ]; then PIDS+=($npid); break; fi
    kill -TERM "$npid" 2>/dev/null || true
    wait "$npid" 2>/dev/null || true
done
[ -n "$NPORT" ] || { echo "run.sh: nginx did not start:" >&2; cat "$WORK/nginx-error.log" >&2; exit 1; }
NURL="http://127.0.0.1:$NPORT"
ctype=$(curl -fsI "$NURL/row.json" | awk -F': ' 'tolower($1)=="content-type" {print $2}' | tr -d '\r')
log "nginx ($LOOPS worker processes) on $NURL serving row.json: $STATIC_SIZE bytes, $ctype"

# ---- wrk runs ------------------------------------------------------------------------------
WRK=(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 10s --latency)
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# "12.34us" / "1.5ms" / "2.00s" / "1.00m" -> milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) printf "%.3f", substr(v, 1, length(v) - 2) / 1000
        else if (v ~ /ms$/) printf "%.3f", substr(v, 1, length(v) - 2)
        else if (v ~ /s$/) printf "%.3f", substr(v, 1, length(v) - 1) * 1000
        else if (v ~ /m$/) printf "%.3f", substr(v, 1, length(v) - 1) * 60000
        else printf "null" }'
}

# run NAME URL SCRIPT [extra script args...]: one wrk run, parsed into a TSV line
# name rps p50 p90 p99 non2xx errors mb_per_s.
run() {
    local name=$1 url=$2 script=$3
    shift 3
    log "scenario $name (${DURATION}s)"
    local out="$WORK/wrk-$name.txt"
    timeout $((DURATION + 60)) "${WRK[@]}" -s "$HERE/$script" "$url" -- t "$ROWS" "$DIM" "$@" >"$out" 2>&1 || {
        echo "run.sh: wrk failed for $name:" >&2; cat "$out" >&2; exit 1; }
    local rps p50 p90 p99 non2xx errs tput
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p90=$(to_ms "$(awk '$1 == "90%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    errs=$(awk '/Socket errors:/ {s = 0; for (i = 4; i <= NF; i += 2) { gsub(",", "", $i); s += $i } print s}' "$out")
    tput=$(awk '/^Transfer\/sec:/ {v = $2; if (v ~ /GB$/) v = v * 1024; else if (v ~ /KB$/) v = v / 1024; else if (v ~ /B$/ && v !~ /MB$/) v = v / 1048576; else v = v + 0; printf "%.1f", v}' "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${rps:-0}" "$p50" "$p90" "$p99" "${non2xx:-0}" "${errs:-0}" "${tput:-0}" >>"$RESULTS"
}

run rows "$EURL" rows.lua
# Profile hook: PERF_ROWS=1 records embd during a second single-row run (perf must exist).
if [ "${PERF_ROWS:-0}" = 1 ] && command -v perf >/dev/null; then
    log "perf record on embd (pid $EPID) during a single-row run"
    timeout $((DURATION + 30)) perf record -F 999 -g -p "$EPID" -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    perfpid=$!
    timeout $((DURATION + 60)) "${WRK[@]}" -s "$HERE/rows.lua" "$EURL" -- t "$ROWS" "$DIM" >/dev/null 2>&1 || true
    wait "$perfpid" || true
    perf report -i "$WORK/perf.data" --no-children --sort dso,sym --percent-limit 0.5 --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -40 >"${OUT%.json}.perf.txt" || true
    log "perf summary in ${OUT%.json}.perf.txt"
fi
run static_nginx "$NURL" static.lua
# The lookup/nginx ratio: the machine's load moves both, so the two run alternately, PAIRS
# times (the first pair is rows and static_nginx above), and the ratio is the median over the
# pairs; the paced runs use half the median nginx rate (the issue's "half that rate").
for i in $(seq 2 "$PAIRS"); do
    run "rows#$i" "$EURL" rows.lua
    run "static_nginx#$i" "$NURL" static.lua
done
PAIR_RATIOS=$(awk -F'\t' '$1 ~ /^rows(#|$)/ {r[$1 == "rows" ? 1 : substr($1, 6)] = $2}
    $1 ~ /^static_nginx(#|$)/ {n[$1 == "static_nginx" ? 1 : substr($1, 14)] = $2}
    END {for (i = 1; i in r; i++) printf "%s%.3f", (i > 1 ? " " : ""), (n[i] > 0 ? r[i] / n[i] : 0)}' "$RESULTS")
median() { tr ' ' '\n' | sort -g | awk '{v[NR] = $1} END {printf "%s", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
RATIO=$(echo "$PAIR_RATIOS" | median)
NGINX_MEDIAN=$(awk -F'\t' '$1 ~ /^static_nginx(#|$)/ {printf "%s ", $2}' "$RESULTS" | sed 's/ $//' | median)
run keys "$EURL" keys.lua
run gather100_json "$EURL" gather100_json.lua
run gather100_base64 "$EURL" gather100_base64.lua
run gather1000_json "$EURL" gather1000_json.lua
run gather1000_base64 "$EURL" gather1000_base64.lua
run search1 "$EURL" search1.lua
run search_batch64 "$EURL" search_batch64.lua
RATE=$(awk -v r="$NGINX_MEDIAN" 'BEGIN {printf "%d", r / 2}')
run rows_paced "$EURL" rows_paced.lua "$RATE" "$WRK_THREADS"
run static_paced "$NURL" static_paced.lua "$RATE" "$WRK_THREADS"

# ---- gather of 1000 ids as JSON: server time to first byte vs transfer -----------------------
# curl over loopback, one request at a time on an idle server, the median of 21 runs.
# time_starttransfer = request + gather + encode (the body is fully encoded before the first
# byte is sent); time_total - time_starttransfer = the transfer of the body.
gbody=$(awk -v rows="$ROWS" 'BEGIN { srand(42); printf "{\"ids\":["; for (i = 0; i < 1000; i++) printf "%s%d", (i ? "," : ""), int(rand() * rows); printf "]}" }')
for i in $(seq 21); do
    curl -fs -o /dev/null -H 'Content-Type: application/json' -d "$gbody" \
        -w '%{time_pretransfer} %{time_starttransfer} %{time_total} %{size_download}\n' "$EURL/v1/tables/t/gather"
done >"$WORK/curl-gather.txt"
G_TTFB_MS=$(awk '{ printf "%.3f\n", ($2 - $1) * 1000 }' "$WORK/curl-gather.txt" | sort -n | sed -n 11p)
G_XFER_MS=$(awk '{ printf "%.3f\n", ($3 - $2) * 1000 }' "$WORK/curl-gather.txt" | sort -n | sed -n 11p)
G_BYTES=$(awk 'END { print $4 }' "$WORK/curl-gather.txt")

# The same gather at the library level: emb_store_row + jsonw (what the server's gather does,
# minus HTTP), built from the tree when the embd build directory has libembd_lib.a.
G_ENC_MS=null
G_ENC_NOTE="library-level encode not measured (no libembd_lib.a next to $EMBD)"
LIBA="$(dirname "$EMBD")/libembd_lib.a"
if [ -f "$LIBA" ] && command -v cc >/dev/null; then
    if cc -std=gnu11 -O2 -D_GNU_SOURCE -I"$ROOT/lib" -I"$ROOT/server" "$HERE/gather_encode.c" \
        "$ROOT/server/jsonw.c" "$LIBA" -lm -lpthread -o "$WORK/gather_encode" 2>"$WORK/cc.log"; then
        "$WORK/gather_encode" "$WORK/t.emb" 1000 51 >"$WORK/encode.txt"
        G_ENC_MS=$(awk '/^json/ { for (i = 1; i < NF; i++) if ($i == "median") { print $(i + 1); exit } }' "$WORK/encode.txt")
        G_ENC_NOTE=$(tr '\n' ';' <"$WORK/encode.txt")
    else
        G_ENC_NOTE="gather_encode.c did not build: $(head -3 "$WORK/cc.log" | tr '\n' ' ')"
    fi
fi

# ---- report --------------------------------------------------------------------------------
CPU=$(lscpu | awk -F': *' '/^Model name/ {print $2; exit}')
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true || echo false)

{
    echo
    echo "embd $COMMIT$([ "$DIRTY" = true ] && echo ' (tree modified)') on $CPU, $NPROC CPUs; table $ROWS x $DIM f16+q1"
    echo "embd serve --loops $LOOPS --threads $THREADS; nginx worker_processes $LOOPS; wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency"
    echo
    printf '%-18s %12s %10s %10s %10s %8s %8s %10s\n' scenario 'req/s' 'p50 ms' 'p90 ms' 'p99 ms' non2xx errors 'MB/s'
    awk -F'\t' '{ printf "%-18s %12.1f %10s %10s %10s %8s %8s %10s\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$RESULTS"
    echo
    echo "single-row lookup / nginx static ($STATIC_SIZE B): $RATIO (median of $PAIRS alternating pairs: $PAIR_RATIOS)"
    echo "rows_paced and static_paced target: $RATE req/s (half of nginx's median rate)"
    echo "gather 1000 x $DIM as JSON ($G_BYTES B), curl median of 21: server time to first byte $G_TTFB_MS ms, transfer $G_XFER_MS ms"
    echo "  library level: $G_ENC_NOTE"
} | tee "$WORK/report.txt"

{
    printf '{\n  "commit": "%s",\n  "tree_modified": %s,\n  "cpu": "%s",\n  "cpus": %s,\n' "$COMMIT" "$DIRTY" "$CPU" "$NPROC"
    printf '  "table": {"rows": %s, "dim": %s, "codecs": "f16+q1"},\n' "$ROWS" "$DIM"
    printf '  "embd": {"loops": %s, "threads": %s},\n  "nginx": {"worker_processes": %s, "static_bytes": %s},\n' "$LOOPS" "$THREADS" "$LOOPS" "$STATIC_SIZE"
    printf '  "wrk": {"threads": %s, "connections": %s, "duration_s": %s},\n' "$WRK_THREADS" "$CONNS" "$DURATION"
    printf '  "scenarios": [\n'
    awk -F'\t' '{ printf "%s    {\"name\": \"%s\", \"rps\": %s, \"p50_ms\": %s, \"p90_ms\": %s, \"p99_ms\": %s, \"non2xx\": %s, \"socket_errors\": %s, \"mb_per_s\": %s}", (NR > 1 ? ",\n" : ""), $1, $2, $3, $4, $5, $6, $7, $8 } END { print "" }' "$RESULTS"
    printf '  ],\n'
    printf '  "rows_over_nginx": %s,\n  "rows_over_nginx_pairs": [%s],\n  "rows_paced_target_rps": %s,\n' "$RATIO" "$(echo "$PAIR_RATIOS" | sed 's/ /, /g')" "$RATE"
    printf '  "gather1000_json": {"bytes": %s, "curl_ttfb_ms": %s, "curl_transfer_ms": %s, "library_encode_ms": %s}\n}\n' \
        "${G_BYTES:-0}" "${G_TTFB_MS:-null}" "${G_XFER_MS:-null}" "${G_ENC_MS:-null}"
} >"$OUT"
log "wrote $OUT"
