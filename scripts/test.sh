#!/usr/bin/env bash
# The README's second command, and what CI runs (.ci/run): install, build with -Werror, run
# every test; then again under AddressSanitizer + UndefinedBehaviorSanitizer; then lib/ for
# aarch64 (cross-compiled, NEON kernels run under qemu); then the format check. Exits non-zero
# on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

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
  run_suite "asan+ubsan" build-asan -DEMBD_SANITIZE=address,undefined

echo "== aarch64: lib/ cross-compiled, NEON kernels checked under qemu (tests/cross/aarch64.sh)"
if tests/cross/aarch64.sh build-aarch64; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  echo "suite aarch64 FAILED"
fi

echo "== format check (clang-format, .clang-format)"
fmt_files=(lib/*.c lib/*.h server/*.c server/*.h tests/lib/*.c tests/lib/*.h tests/server/*.c
  tests/server/*.h tests/cross/*.c)
if clang-format --dry-run -Werror "${fmt_files[@]}" 2>/dev/null; then
  passed=$((passed + 1))
else
  clang-format --dry-run "${fmt_files[@]}" 2>&1 | head -20 || true
  failed=$((failed + 1))
  echo "format check FAILED: run clang-format -i on the files above"
fi

echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
