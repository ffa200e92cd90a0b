#!/usr/bin/env bash
# tests/cross/aarch64.sh - lib/ for AArch64: cross-compiles every library file with Debian's
# gcc-aarch64-linux-gnu (-Werror, the project's warnings), links tests/cross/kernels_check.c
# statically and runs it under qemu-aarch64 (user-mode emulation, a few seconds): the NEON
# kernels against the scalar twins, and batch search against single queries. Called by
# scripts/test.sh; installs its three Debian packages when they are missing.
#
#   tests/cross/aarch64.sh [--compile-only] [BUILD_DIR]   (default BUILD_DIR: build-aarch64)
set -euo pipefail
cd "$(dirname "$0")/../.."

compile_only=0
if [ "${1:-}" = "--compile-only" ]; then
  compile_only=1
  shift
fi
out=${1:-build-aarch64}

# The cross compiler, its C library and qemu's user-mode emulator, from Debian.
scripts/install-deps.sh gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user

cc=aarch64-linux-gnu-gcc
flags=(-std=gnu11 -O2 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla
  -Werror -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -ffp-contract=off -Ilib)
rm -rf "$out"
mkdir -p "$out/obj"
for f in lib/*.c; do
  "$cc" "${flags[@]}" -c "$f" -o "$out/obj/$(basename "$f" .c).o"
done
# The NEON table must be in the library: an empty kernels_neon.o would mean a wrong guard.
if ! aarch64-linux-gnu-nm "$out/obj/kernels_neon.o" | grep -qE ' [DdRr] emb__kernels_neon$'; then
  echo "aarch64: kernels_neon.c compiled to no NEON table" >&2
  exit 1
fi
echo "aarch64: lib/ compiled ($(ls "$out/obj" | wc -l) files)"
[ "$compile_only" -eq 1 ] && exit 0

"$cc" "${flags[@]}" -static tests/cross/kernels_check.c "$out"/obj/*.o -lm -o "$out/kernels_check"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
timeout 600 qemu-aarch64 "$out/kernels_check" "$tmp"
