#!/usr/bin/env bash
# Installs what deploy/container-smoke and deploy/k8s/validate.sh need, from Debian 12's
# packages only, through scripts/install-deps.sh (which brings curl, Node.js and npm): podman,
# buildah and runc build and run images without a Docker engine, debootstrap makes the base
# images. kubectl is not installed here: validate.sh unpacks Debian's kubernetes-client into a
# cache directory, so that it cannot conflict with another kubectl package. Idempotent and quiet
# when everything is already there. Run as root (or with sudo on PATH).
set -euo pipefail
exec "$(dirname "$0")/../scripts/install-deps.sh" podman buildah runc debootstrap
