#!/bin/sh
# promtool.sh - prints the path of a promtool binary on stdout, fetching it on first use.
#
# promtool ships inside Debian's prometheus package. On the first run the package is fetched with
# `apt-get download` (no installation, no daemon) and unpacked with `dpkg-deb -x` into a cache
# directory, ${EMBD_TOOLS:-$HOME/.cache/embd-tools}/prometheus; later runs only print the cached
# path. `apt-get update` runs only when the download fails (a fresh image has no package lists).
# A promtool named by $PROMTOOL or found on $PATH is used as is.
#
# Exit status: 0 with the path on stdout; 1 with the reason on stderr when promtool cannot be
# obtained (no apt, no network, not root for apt-get update). apt's own chatter goes to stderr.
set -eu

if [ -n "${PROMTOOL:-}" ] && [ -x "$PROMTOOL" ]; then
    printf '%s\n' "$PROMTOOL"
    exit 0
fi
if p=$(command -v promtool 2>/dev/null) && [ -n "$p" ]; then
    printf '%s\n' "$p"
    exit 0
fi

cache=${EMBD_TOOLS:-${HOME:-/tmp}/.cache/embd-tools}
dir=$cache/prometheus
bin=$dir/usr/bin/promtool
if [ -x "$bin" ]; then
    printf '%s\n' "$bin"
    exit 0
fi

for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "promtool.sh: $tool not found (not a Debian system?)" >&2
        exit 1
    fi
done

mkdir -p "$cache"
# Work in a private directory and rename at the end, so parallel runs never see half a tree.
tmp=$(mktemp -d "$cache/.prometheus.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

# As root, apt drops to the _apt user for downloads, which cannot write into a root-owned
# directory under $HOME: it would warn and fall back anyway, so say so up front.
sandbox=
if [ "$(id -u)" = 0 ]; then
    sandbox=APT::Sandbox::User=root
fi

fetch() {
    (cd "$tmp" && apt-get ${sandbox:+-o "$sandbox"} -q download prometheus) >&2
}
if ! fetch; then
    echo "promtool.sh: download failed, running apt-get update" >&2
    if ! apt-get -q update >&2 || ! fetch; then
        echo "promtool.sh: cannot download Debian's prometheus package" >&2
        exit 1
    fi
fi

set -- "$tmp"/prometheus_*.deb
if [ ! -f "$1" ]; then
    echo "promtool.sh: apt-get download left no prometheus_*.deb" >&2
    exit 1
fi
dpkg-deb -x "$1" "$tmp/root"
if [ ! -x "$tmp/root/usr/bin/promtool" ]; then
    echo "promtool.sh: the package holds no usr/bin/promtool" >&2
    exit 1
fi
# Another run may have won the race; its tree is as good as ours.
mv -T "$tmp/root" "$dir" 2>/dev/null || true
if [ ! -x "$bin" ]; then
    echo "promtool.sh: could not install into $dir" >&2
    exit 1
fi
printf '%s\n' "$bin"
