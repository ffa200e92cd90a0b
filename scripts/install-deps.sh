#!/usr/bin/env bash
# Installs what embd needs to build, test and benchmark, from Debian 12's packages only, and
# any further Debian packages named as arguments (deploy/install-deps.sh names its own).
# Idempotent and quiet when everything is already there. Run as root (or with sudo on PATH).
set -euo pipefail

packages=(
  build-essential cmake pkg-config           # toolchain
  libmicrohttpd-dev libjansson-dev libuv1-dev # the server's libraries
  libcriterion-dev libcurl4-openssl-dev       # tests
  python3-numpy                               # .npy fixtures cross-checked with numpy
  clang-format                                # CI's format check
  clang-14 libclang-rt-14-dev llvm-14         # fuzzing: clang, libFuzzer, llvm-symbolizer
  time                                        # /usr/bin/time -v for the pack benchmark
  curl                                        # the curl shell test and the README examples
)
# Node.js runs the OpenAPI contract tests (ajv): Debian's nodejs and npm unless a node exists.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
