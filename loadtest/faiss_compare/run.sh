#!/bin/bash
# loadtest/faiss_compare/run.sh - faiss (Debian python3-faiss) next to `embd bench` on the same
# generated rows and queries. A benchmark, never a test. See README.md in this folder.
#
#   run.sh [--rows N] [--dim D] [--nq Q] [--seconds S] [--repeats R] [--blas openblas|system]
#          [--oversample LIST] [--embd PATH] [--json OUT] [--keep]
#
# Steps: embd gen writes N + Q clustered rows (seed 42, the generator embd bench uses); numpy
# splits them into base.npy (the first N) and queries.npy (the last Q); embd pack packs base.npy
# as f16, q1 and f16+q1 (metric dot, what IndexFlatIP computes); embd bench measures the three
# stores against the f32 rows; compare.py runs faiss on the same files and prints both. With
# --blas openblas (the default) faiss runs on Debian's OpenBLAS, unpacked from its package into
# a private directory and put first on LD_LIBRARY_PATH for compare.py only: the system's BLAS
# alternative (the reference BLAS here, unoptimised) is left alone. --oversample LIST is passed to
# embd bench: two-stage modes at each factor with both first stages (q1 x q8 and q1 x q1).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ROWS=100000 DIM=128 NQ=1000 SECONDS_PER=1 REPEATS=5 BLAS=openblas EMBD="" OUT="faiss_compare.json"
KEEP=0 OVERSAMPLE=""
PY=/usr/bin/python3
NPROC="$(nproc)"

while [ $# -gt 0 ]; do
    case "$1" in
    --rows) ROWS="$2"; shift 2 ;;
    --dim) DIM="$2"; shift 2 ;;
    --nq) NQ="$2"; shift 2 ;;
    --seconds) SECONDS_PER="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --blas) BLAS="$2"; shift 2 ;;
    --oversample) OVERSAMPLE="$2"; shift 2 ;;
    --embd) EMBD="$2"; shift 2 ;;
    --json) OUT="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

log() { echo "faiss_compare: $*" >&2; }

WORK="$(mktemp -d /tmp/embd-faiss.XXXXXX)"
cleanup() { if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

if ! "$PY" -c 'import faiss, numpy' 2>/dev/null; then
    log "python3-faiss is missing: apt-get install -y python3-faiss python3-threadpoolctl"
    exit 1
fi
if [ -z "$EMBD" ]; then
    if [ -x "$ROOT/build/embd" ]; then
        EMBD="$ROOT/build/embd"
    else
        log "building embd (Release) in $WORK/build"
        cmake -S "$ROOT" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DEMBD_TESTS=OFF >/dev/null
        make -C "$WORK/build" -j"$NPROC" embd >/dev/null
        EMBD="$WORK/build/embd"
    fi
fi

log "generating $ROWS x $DIM + $NQ query rows"
"$EMBD" gen --kind clusters --rows $((ROWS + NQ)) --dim "$DIM" --seed 42 --quiet -o "$WORK/all.npy"
"$PY" - "$WORK" "$ROWS" <<'PYEOF'
import sys
import numpy as np
work, n = sys.argv[1], int(sys.argv[2])
x = np.load(f"{work}/all.npy", mmap_mode="r")
np.save(f"{work}/base.npy", np.ascontiguousarray(x[:n]))
np.save(f"{work}/queries.npy", np.ascontiguousarray(x[n:]))
PYEOF
rm -f "$WORK/all.npy"

for dt in f16 q1 f16+q1; do
    # Only the two-stage store needs pack's recall evaluation (it records the default oversample).
    ev=0
    [ "$dt" = "f16+q1" ] && ev=100
    "$EMBD" pack "$WORK/base.npy" -o "$WORK/base_$dt.emb" --dtype "$dt" --metric dot \
        --eval-queries "$ev" --quiet >/dev/null
done

log "embd bench"
"$EMBD" bench --no-gen --store "$WORK/base_f16.emb" --store "$WORK/base_q1.emb" \
    --store "$WORK/base_f16+q1.emb" --npy "$WORK/base.npy" --queries "$WORK/queries.npy" \
    --nq "$NQ" --seconds "$SECONDS_PER" --repeats "$REPEATS" --threads "$NPROC" \
    ${OVERSAMPLE:+--oversample "$OVERSAMPLE"} --json "$WORK/embd.json"

# OpenBLAS for faiss, from Debian's package, without installing it (installing would switch
# libblas.so.3 for every program on the machine). Cached in $EMBD_OPENBLAS_DIR.
blas_env=()
if [ "$BLAS" = openblas ]; then
    OB="${EMBD_OPENBLAS_DIR:-/tmp/embd-openblas}"
    MA="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
    LIBDIR="$OB/usr/lib/$MA/openblas-pthread"
    if [ ! -e "$LIBDIR/libblas.so.3" ]; then
        log "unpacking Debian's libopenblas0-pthread into $OB"
        (cd "$WORK" && apt-get download -q libopenblas0-pthread >/dev/null)
        mkdir -p "$OB"
        dpkg-deb -x "$WORK"/libopenblas0-pthread_*.deb "$OB"
    fi
    blas_env=(LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    # OpenBLAS 0.3.21 does not know every CPU model: on the benchmark machine its detection
    # gave Cooperlake in one process and Prescott (SSE3 kernels, 1.6x slower batches) in the
    # next. The core type is named from the CPU's flags instead, unless the caller set one.
    if [ -z "${EMBD_OPENBLAS_CORETYPE:-}" ]; then
        flags="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
        case "$flags" in
        *avx512_bf16*) EMBD_OPENBLAS_CORETYPE=Cooperlake ;;
        *avx512f*) EMBD_OPENBLAS_CORETYPE=SkylakeX ;;
        *avx2*) EMBD_OPENBLAS_CORETYPE=Haswell ;;
        esac
    fi
    [ -n "${EMBD_OPENBLAS_CORETYPE:-}" ] && blas_env+=(OPENBLAS_CORETYPE="$EMBD_OPENBLAS_CORETYPE")
elif [ "$BLAS" != system ]; then
    log "--blas must be openblas or system"
    exit 2
fi

# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE may be set on this machine for the test suite; they are
# unset for this command, then the core type chosen above (if any) is set.
log "faiss ($BLAS BLAS${EMBD_OPENBLAS_CORETYPE:+, core $EMBD_OPENBLAS_CORETYPE})"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "${blas_env[@]}" "$PY" "$HERE/compare.py" \
    --base "$WORK/base.npy" --queries "$WORK/queries.npy" --embd-json "$WORK/embd.json" \
    --nq "$NQ" --seconds "$SECONDS_PER" --repeats "$REPEATS" --json "$OUT"
log "wrote $OUT"
