#!/usr/bin/env bash
# Side-by-side benchmark of vipd, HAProxy and a direct connection on
# 127.0.0.1. Called by `make bench` (after `make build`); extra arguments go
# to vipbench, e.g. bench/run.sh -rounds 3 -only bulk1,pairs.
# Installs nothing: it needs haproxy on PATH (`sudo make bench` installs it
# with scripts/deps.sh) and bin/vipd built.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Debian installs haproxy in /usr/sbin, which a user's PATH often lacks.
haproxy="$(command -v haproxy || true)"
if [ -z "$haproxy" ] && [ -x /usr/sbin/haproxy ]; then
	haproxy=/usr/sbin/haproxy
fi
if [ -z "$haproxy" ]; then
	echo "bench: haproxy is not installed; sudo make bench installs it (or: apt-get install haproxy)" >&2
	echo "       (Debian 12 ships 2.6; it is only run in the foreground with a generated config)" >&2
	exit 1
fi
if [ ! -x bin/vipd ]; then
	echo "bench: bin/vipd is missing; build it with: make build" >&2
	exit 1
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/vipbench-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/vipbench" ./bench/cmd/vipbench

mkdir -p bench/out
out="bench/out/bench-$(date -u +%Y%m%dT%H%M%SZ).txt"
"$tmp/vipbench" -haproxy "$haproxy" -vipd bin/vipd -out "$out" "$@"
echo "bench: report written to $out" >&2
