#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): install, build with -Werror, run
# every test; then again under AddressSanitizer + UndefinedBehaviorSanitizer with the
# allocation-failure hook (lib/emb_fault.h); then the ThreadSanitizer step; then the fuzz
# targets for a bounded time (clang, libFuzzer); then lib/ for aarch64 (cross-compiled, NEON
# kernels run under qemu); then the format check; then the deployment files and the container
# image (deploy/). A failed build stops it at once; failed suites are counted and make the exit
# status non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./deploy/install-deps.sh # podman, buildah, runc, debootstrap: the container smoke test

passed=0
failed=0
run_suite() { # name build-dir cmake-args...
  local name=$1 dir=$2
  shift 2
  echo "== $name: configure and build ($dir)"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBD_WERROR=ON "$@" >/dev/null
  if ! cmake --build "$dir" -j "$(nproc)" >"$dir/build.log" 2>&1; then
    grep -vE '^\[ *[0-9]+%\]' "$dir/build.log" | tail -60
    echo "suite $name: build FAILED"
    exit 1
  fi
  echo "== $name: tests"
  if (cd "$dir" && ctest --output-on-failure --timeout 1500); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "suite $name FAILED"
  fi
}

run_suite "release" build-ci
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run_suite "asan+ubsan" build-asan -DEMBD_SANITIZE=address,undefined -DEMBD_FAULT_INJECTION=ON

# ThreadSanitizer: the server built with -fsanitize=thread, driven by the release build's
# integration suites (Criterion itself cannot run under gcc's TSan). Any report fails the step.
tsan_step() {
  echo "== tsan: build the server with -fsanitize=thread (build-tsan)"
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBD_WERROR=ON \
    -DEMBD_SANITIZE=thread -DEMBD_TESTS=OFF >/dev/null
  cmake --build build-tsan -j "$(nproc)" --target embd >build-tsan/build.log 2>&1 ||
    { tail -40 build-tsan/build.log; return 1; }
  local reports=build-tsan/reports
  rm -rf "$reports" && mkdir -p "$reports"
  echo "== tsan: server and curl suites against build-tsan/embd"
  local rc=0
  EMBD_TEST_SERVER_BIN=$PWD/build-tsan/embd TSAN_OPTIONS="log_path=$PWD/$reports/tsan exitcode=66" \
    build-ci/test_server --jobs 1 >build-tsan/server.log 2>&1 || rc=1
  TSAN_OPTIONS="log_path=$PWD/$reports/tsan exitcode=66" \
    tests/server/curl.sh build-tsan/embd >build-tsan/curl.log 2>&1 || rc=1
  tail -n 3 build-tsan/server.log build-tsan/curl.log
  if compgen -G "$reports/tsan.*" >/dev/null; then
    head -60 "$reports"/tsan.*
    echo "tsan: $(ls "$reports" | wc -l) report file(s) in $reports"
    rc=1
  fi
  return $rc
}
if tsan_step; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  echo "suite tsan FAILED"
fi

# Every fuzz target for a bounded time (tests/fuzz/run.sh: FUZZ_SECONDS each, about 10 minutes
# in all); a crash fails the run and leaves its input in tests/fuzz/regressions/.
if tests/fuzz/run.sh; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  echo "suite fuzz FAILED"
fi

echo "== aarch64: lib/ cross-compiled, NEON kernels checked under qemu (tests/cross/aarch64.sh)"
if tests/cross/aarch64.sh build-aarch64; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  echo "suite aarch64 FAILED"
fi

echo "== format check (clang-format, .clang-format)"
fmt_files=(lib/*.c lib/*.h server/*.c server/*.h tests/lib/*.c tests/lib/*.h tests/server/*.c
  tests/server/*.h tests/fuzz/*.c tests/fuzz/*.h tests/cross/*.c)
if clang-format --dry-run -Werror "${fmt_files[@]}" 2>/dev/null; then
  passed=$((passed + 1))
else
  clang-format --dry-run "${fmt_files[@]}" 2>&1 | head -20 || true
  failed=$((failed + 1))
  echo "format check FAILED: run clang-format -i on the files above"
fi

# Deployment (issue 5): the Kubernetes, Compose and systemd files checked offline, then the
# image built and run with podman (deploy/README.md). Each step's time is printed.
deploy_step() { # name command...
  local name=$1 t0=$SECONDS
  shift
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "$name FAILED"
  fi
  echo "== $name: $((SECONDS - t0)) s"
}
deploy_step "deploy validation (deploy/k8s/validate.sh)" ./deploy/k8s/validate.sh
deploy_step "shard fan-out recipe (deploy/shards/check.mjs)" node deploy/shards/check.mjs build-ci/embd
deploy_step "container smoke test (deploy/container-smoke)" ./deploy/container-smoke

echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
