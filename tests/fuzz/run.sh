#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, -fsanitize=fuzzer,address,undefined; EMBD_FUZZ=ON in
# build-fuzz/) and runs each for a bounded time from its seed corpus, regressions and
# dictionary. A crash, a failed property, a leak, a timeout or an out-of-memory is written to
# tests/fuzz/regressions/<name>/ (commit it with the fix: the ctest replay then runs it in every
# build) and makes the script exit non-zero. New coverage found by the run is kept in a scratch
# directory and dropped: the committed corpus changes only through make_corpus.sh or by hand.
#
# usage: tests/fuzz/run.sh [TARGET...]        (default: every target)
# env:   FUZZ_SECONDS   seconds per target (default 35)
#        FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
#        FUZZ_RSS_MB    memory limit per target in MiB (default 2048)
#        FUZZ_BUILD     build directory (default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
seconds=${FUZZ_SECONDS:-35}
timeout_s=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
build=${FUZZ_BUILD:-build-fuzz}
all=(store keys npy safetensors gguf word2vec word2vec_text glove fvecs detect parse_float float api)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

cc=$(command -v clang-14 || command -v clang || true)
[ -n "$cc" ] || { echo "run.sh: clang-14 is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
echo "== fuzz: configure and build ($build, $cc)"
mkdir -p "$build"
if ! { CC=$cc cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBD_FUZZ=ON \
  -DEMBD_TESTS=OFF -DEMBD_WERROR=ON >"$build/configure.log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/fuzz_}" >"$build/build.log" 2>&1; }; then
  cat "$build/configure.log"
  grep -vE '^\[ *[0-9]+%\]' "$build/build.log" | tail -60
  echo "fuzz: build FAILED"
  exit 1
fi

symbolizer=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
printf '%-14s %10s %8s %8s %8s %s\n' target runs exec/s cov ft result >"$scratch/summary"
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  corpus=tests/fuzz/corpus/$t
  regress=tests/fuzz/regressions/$t
  dict=tests/fuzz/dict/$t.dict
  [ -x "$bin" ] && [ -d "$corpus" ] && [ -f "$dict" ] || {
    echo "run.sh: no target, corpus or dictionary for '$t'" >&2
    exit 1
  }
  mkdir -p "$regress" "$scratch/$t"
  echo "== fuzz: $t for $seconds s"
  log=$scratch/$t.log
  touch "$scratch/$t.start"
  rc=0
  # The scratch directory comes first: libFuzzer writes new inputs there, never into the repo.
  # -timeout and -rss_limit_mb turn hangs and memory blow-ups into failures with an artifact.
  (cd "$scratch/$t" && "$root/$bin" -max_total_time="$seconds" -timeout="$timeout_s" \
    -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb" -dict="$root/$dict" \
    -artifact_prefix="$root/$regress/" -print_final_stats=1 \
    "$scratch/$t" "$root/$corpus" "$root/$regress") >"$log" 2>&1 || rc=$?
  last=$(grep -E '^#[0-9]+[[:space:]].* cov: ' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log")
  eps=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log")
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc)"
    failed+=("$t")
    echo "---- $t: the end of libFuzzer's log"
    grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$log" | tail -60
    echo "---- $t: inputs written to $regress/:"
    find "$regress" -type f -newer "$scratch/$t.start" -printf '  %p\n'
  fi
  printf '%-14s %10s %8s %8s %8s %s\n' "$t" "${runs:--}" "${eps:--}" "${cov:--}" "${ft:--}" \
    "$result" >>"$scratch/summary"
done
echo "== fuzz summary ($seconds s per target)"
cat "$scratch/summary"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz FAILED: ${failed[*]}; reproduce with $build/tests/fuzz/fuzz_<target> FILE," \
    "fix, and commit the input under tests/fuzz/regressions/<target>/"
  exit 1
fi
