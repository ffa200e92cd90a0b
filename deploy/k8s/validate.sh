#!/usr/bin/env bash
# validate.sh - renders deploy/k8s (the base and the store-v2, shard-0 and shard-1 overlays)
# with kubectl kustomize and checks the result, deploy/docker-compose.yml and
# deploy/systemd/embd.service, offline (validate.mjs says what is checked).
#
# The renderer is Debian 12's kubectl 1.20 (package kubernetes-client, kustomize v2.0.3 inside),
# what a fresh Debian 12 box can install. It is fetched with `apt-get download` and unpacked with
# `dpkg-deb -x` into ${EMBD_TOOLS:-$HOME/.cache/embd-tools}/kubernetes-client on first use, so it
# never conflicts with another kubectl package. When a different kubectl is on PATH (a current
# one, with kustomize v5), it renders too and both renderings must hold the same objects.
# Then validate.mjs --selftest proves each check can fail. npm packages: deploy/package-lock.json,
# installed with `npm ci` when node_modules is missing or older than the lock.
#
# Closes with "deploy validation: N passed, N failed"; exit status 0 only when all passed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deploy=$(dirname "$here")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n_ok=0
n_fail=0
count() { # file: prints it and adds its ok/FAIL lines to the closing count
  cat "$1"
  n_ok=$((n_ok + $(grep -c '^ok ' "$1" || true)))
  n_fail=$((n_fail + $(grep -c '^FAIL ' "$1" || true)))
}

debian_kubectl() {
  local cache=${EMBD_TOOLS:-${HOME:-/tmp}/.cache/embd-tools}
  local dir=$cache/kubernetes-client bin
  bin=$dir/usr/bin/kubectl
  if [ -x "$bin" ]; then
    printf '%s\n' "$bin"
    return 0
  fi
  mkdir -p "$cache"
  local work
  work=$(mktemp -d "$cache/.kubernetes-client.XXXXXX")
  if ! (cd "$work" && apt-get download kubernetes-client >/dev/null 2>&1); then
    [ "$(id -u)" -eq 0 ] && apt-get update -q >/dev/null 2>&1
    (cd "$work" && apt-get download kubernetes-client >/dev/null 2>&1) || {
      echo "validate.sh: cannot download Debian's kubernetes-client" >&2
      rm -rf "$work"
      return 1
    }
  fi
  dpkg-deb -x "$work"/kubernetes-client_*.deb "$work/tree"
  rm -rf "$dir"
  mv "$work/tree" "$dir"
  rm -rf "$work"
  printf '%s\n' "$bin"
}

cd "$deploy"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "validate.sh: installing the pinned packages (npm ci)"
  npm ci --no-audit --no-fund >/dev/null
fi

kubectl_deb=$(debian_kubectl)
renderers=("$kubectl_deb")
labels=("Debian kubectl $("$kubectl_deb" version --client --short 2>/dev/null | sed 's/.*: //')")
echo "renderer 1: ${labels[0]} ($kubectl_deb)"
other=$(command -v kubectl || true)
if [ -n "$other" ] && ! cmp -s "$other" "$kubectl_deb"; then
  renderers+=("$other")
  labels+=("kubectl $("$other" version --client 2>/dev/null | sed -n 's/^Client Version: //p'), kustomize $("$other" version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')")
  echo "renderer 2: ${labels[1]} ($other)"
else
  echo "renderer 2: none (no other kubectl on PATH; only Debian's rendering is checked)"
fi

args=()
status=0
for i in "${!renderers[@]}"; do
  k=${renderers[$i]}
  mkdir -p "$tmp/r$i"
  for what in base overlays/store-v2 overlays/shard-0 overlays/shard-1; do
    out=$tmp/r$i/$(basename "$what").yaml
    if ! "$k" kustomize "k8s/$what" >"$out" 2>"$tmp/err"; then
      echo "FAIL - $k kustomize k8s/$what"
      sed 's/^/     | /' "$tmp/err"
      status=1
    elif [ -s "$tmp/err" ]; then
      # Deprecation warnings (kustomize v5 on the v2.0.3 syntax) are shown, not failures.
      echo "     (kustomize, k8s/$what) $(grep -o "'[a-zA-Z]*' is deprecated" "$tmp/err" | tr '\n' ' ')"
    fi
  done
  args+=(--render "${labels[$i]}=$tmp/r$i")
done
[ "$status" -eq 0 ] || exit 1

node k8s/validate.mjs "${args[@]}" --compose docker-compose.yml --unit systemd/embd.service \
  >"$tmp/out" 2>&1 || status=1
count "$tmp/out"

# systemd-analyze verify checks the unit's syntax and that its commands exist; ExecStart's
# /usr/local/bin/embd is provided in a private mount namespace (a tmpfs with a stand-in), so the
# host's /usr/local/bin is never touched. It exits 0 even on an unknown key, so any output fails.
analyze() { # unit file -> output of systemd-analyze verify (empty when sound)
  unshare --mount sh -c 'mount -t tmpfs embd-verify /usr/local/bin &&
    cp /bin/true /usr/local/bin/embd && systemd-analyze verify "$1" 2>&1' sh "$1" || true
}
if command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  out=$(analyze systemd/embd.service)
  if [ -z "$out" ]; then echo "ok   - systemd-analyze verify systemd/embd.service"; else
    echo "FAIL - systemd-analyze verify systemd/embd.service"
    printf '%s\n' "$out" | sed 's/^/     | /'
  fi >"$tmp/out"
  sed 's/^ExecReload=/ExecReloadd=/' systemd/embd.service >"$tmp/embd.service"
  if [ -n "$(analyze "$tmp/embd.service")" ]; then
    echo "ok   - caught: systemd-analyze reports a misspelt key"
  else
    echo "FAIL - systemd-analyze did not report a misspelt key"
  fi >>"$tmp/out"
  grep -q '^FAIL' "$tmp/out" && status=1
  count "$tmp/out"
else
  echo "skip - systemd-analyze verify (needs systemd-analyze and root for a mount namespace)"
fi

echo "== selftest: each check must catch what it guards against"
node k8s/validate.mjs --selftest "${args[@]}" --compose docker-compose.yml \
  --unit systemd/embd.service >"$tmp/out" 2>&1 || status=1
count "$tmp/out"
[ "$status" -eq 0 ] || [ "$n_fail" -gt 0 ] || n_fail=1
echo "deploy validation: $n_ok passed, $n_fail failed"
exit "$status"
