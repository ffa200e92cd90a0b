#!/usr/bin/env bash
# Installs what deploy/container-smoke and deploy/k8s/validate.sh need, from Debian 12's
# packages only: podman, buildah and runc (build and run images without a Docker engine),
# debootstrap (the base images), curl (the endpoint checks), Node.js and npm (validate.mjs).
# kubectl is not installed here: validate.sh unpacks Debian's kubernetes-client into a cache
# directory so that it cannot conflict with another kubectl package. Idempotent and quiet when
# everything is already there. Run as root (or with sudo on PATH).
set -euo pipefail

packages=(
  podman buildah runc # images and containers, as root, without a daemon
  debootstrap         # debian:bookworm and :bookworm-slim, made locally
  curl
)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

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
