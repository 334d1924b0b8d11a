#!/usr/bin/env bash
# scripts/deps.sh PROGRAM...: the Debian packages a make target needs.
#
# For each PROGRAM not on PATH: as root, apt-get update (once) and install
# its package, then disable and stop the package's own service so that it
# holds no ports or addresses; not root, say what is missing and what skips
# or fails without it, and change nothing. The optional programs (promtool,
# chromium, buildah) only make their own test skip when they cannot be installed,
# except under CI (CI=true), where every failed install fails the run.
set -euo pipefail

declare -A package service optional needed_by
known() { package[$1]=$2 service[$1]=$3 optional[$1]=$4 needed_by[$1]=$5; }
#     program    package    service    optional  what skips or fails without it
known ip         iproute2   ""         no  "make demo, make bench-failover and the namespace tests of vip, e2e/bed and e2e"
known nft        nftables   ""         no  "the e2e tests TestPartitionedLeaderDropsTheVIPBeforeTheMajorityClaimsIt and TestLeaderWithoutHealthyBackendsHandsOver"
known haproxy    haproxy    haproxy    no  "make bench, make bench-failover and e2e/bed's TestKeepalivedAndHAProxyConfigsPassTheirChecks"
known keepalived keepalived keepalived no  "make bench-failover and e2e/bed's TestKeepalivedAndHAProxyConfigsPassTheirChecks"
known wrk        wrk        ""         no  "make bench's real-peer case (wrk → proxy → nginx)"
known nginx      nginx      nginx      no  "make bench's real-peer case (wrk → proxy → nginx)"
known promtool   prometheus prometheus yes "deploy's TestAlertRulesPassPromtool"
known chromium   chromium   ""         yes "the browser test of the status page"
known systemd-analyze systemd ""     no  "deploy's TestSystemdUnitVerifies (systemd-analyze verify on the unit)"
known buildah    buildah    ""         yes "deploy's TestMakeImageBuildsAStaticNonRootImage (make image without a docker daemon)"

ci=false
if [[ ${CI:-} =~ ^(1|t|T|TRUE|true|True)$ ]]; then ci=true; fi

missing=()
for p in "$@"; do
	if [ -z "${package[$p]:-}" ]; then
		echo "deps: unknown program $p (known: ${!package[*]})" >&2
		exit 2
	fi
	if command -v "$p" >/dev/null; then continue; fi
	for dir in /usr/sbin /sbin; do
		if [ -x "$dir/$p" ]; then
			echo "deps: $p is in $dir, which is not on PATH; without it on PATH these may skip or fail: ${needed_by[$p]}" >&2
			continue 2
		fi
	done
	missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi

packages() { for p; do printf '%s ' "${package[$p]}"; done; }

if [ "$(id -u)" -ne 0 ]; then
	for p in "${missing[@]}"; do
		echo "deps: $p is missing (Debian's ${package[$p]}); without it these skip or fail: ${needed_by[$p]}" >&2
	done
	echo "deps: not root, so nothing is installed: run the make target as root (sudo make ...), or sudo apt-get install $(packages "${missing[@]}")" >&2
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp "${TMPDIR:-/tmp}/vipd-deps.XXXXXX")
trap 'rm -f "$log"' EXIT
# apt-get quiet: its output goes to $log and is shown only when it fails.
apt() {
	if apt-get -q -y -o Dpkg::Use-Pty=0 "$@" >"$log" 2>&1; then return 0; fi
	echo "deps: apt-get $* failed:" >&2
	tail -n 25 "$log" >&2
	return 1
}
# The package's own service must not hold ports or addresses during tests
# and benchmarks, now or after a reboot.
quiet_service() {
	if [ -d /run/systemd/system ]; then
		systemctl disable --now "$1" >/dev/null 2>&1 || true
	else
		systemctl disable "$1" >/dev/null 2>&1 || true
		service "$1" stop >/dev/null 2>&1 || true
	fi
}

echo "deps: installing $(packages "${missing[@]}")(apt-get, as root)" >&2
required=() optionals=()
for p in "${missing[@]}"; do
	if [ "${optional[$p]}" = yes ]; then optionals+=("$p"); else required+=("$p"); fi
done
if apt update; then
	if [ ${#required[@]} -gt 0 ]; then
		apt install --no-install-recommends $(packages "${required[@]}") || true
	fi
	# One at a time: an optional package that fails leaves the others installed.
	for p in "${optionals[@]}"; do
		apt install --no-install-recommends "${package[$p]}" || true
	done
fi
status=0
for p in "${missing[@]}"; do
	if [ -n "${service[$p]}" ]; then quiet_service "${service[$p]}"; fi
	if command -v "$p" >/dev/null; then continue; fi
	if [ "${optional[$p]}" = yes ] && [ $ci = false ]; then
		echo "deps: could not install ${package[$p]} (no $p on PATH); these skip: ${needed_by[$p]}" >&2
	else
		echo "deps: could not install ${package[$p]} (no $p on PATH); these fail: ${needed_by[$p]}" >&2
		status=1
	fi
done
exit $status
