#!/usr/bin/env bash
# `make run`: one vipd node on loopback with two demo backends behind it, on
# vipd's embedded default config (vipd --print-default). RUN_FRONTEND,
# RUN_ADMIN, RUN_RAFT, RUN_GOSSIP, RUN_BACKEND_A, RUN_BACKEND_B and RUN_DATA,
# when set, replace its addresses and data dir; BIN is where the binaries are.
#
# Ctrl-C (SIGINT to the whole foreground group), SIGTERM or SIGHUP stops all
# three processes; the script waits for them and exits 0, so make prints no
# error line. If one of them ends on its own, the others are stopped and the
# script fails.
set -euo pipefail

bin=${BIN:-bin}

# Each variable and the text it replaces in the embedded default.
declare -A replaces=(
	[RUN_FRONTEND]=127.0.0.1:8080 [RUN_ADMIN]=127.0.0.1:9900
	[RUN_RAFT]=127.0.0.1:7000 [RUN_GOSSIP]=127.0.0.1:7001
	[RUN_BACKEND_A]=127.0.0.1:9001 [RUN_BACKEND_B]=127.0.0.1:9002
	[RUN_DATA]=.vipd-data
)
declare -A value
cfg=$("$bin/vipd" --print-default)
for var in "${!replaces[@]}"; do
	old=${replaces[$var]}
	value[$var]=${!var:-$old}
	if [[ $cfg != *"$old"* ]]; then
		echo "run: vipd's embedded default no longer has $old for $var to replace" >&2
		exit 1
	fi
	cfg=${cfg//"$old"/"${value[$var]}"}
done
mkdir -p "${value[RUN_DATA]}"
cfgfile=$(mktemp "${TMPDIR:-/tmp}/vipd-run.XXXXXX.yaml")
printf '%s\n' "$cfg" >"$cfgfile"

declare -A names # pid -> what it is, for the message when one ends on its own
any_alive() {
	local pid
	for pid; do
		if kill -0 "$pid" 2>/dev/null; then return 0; fi
	done
	return 1
}
stop() {
	trap '' INT TERM HUP # a second Ctrl-C must not cut the cleanup short
	local pids=("${!names[@]}")
	if [ ${#pids[@]} -gt 0 ]; then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		# Bounded: vipd's shutdown_grace is 2 s; whatever runs after 15 s is killed.
		local deadline=$((SECONDS + 15))
		while any_alive "${pids[@]}" && [ $SECONDS -lt $deadline ]; do
			sleep 0.1
		done
		kill -KILL "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
	rm -f "$cfgfile"
}
trap stop EXIT
trap 'exit 0' INT TERM HUP

# Started in the background, where a script's children ignore SIGINT; vipd and
# demo-backend ask for it (signal.Notify), so Ctrl-C still reaches them.
"$bin/demo-backend" -listen "${value[RUN_BACKEND_A]}" -name backend-a &
names[$!]=backend-a
"$bin/demo-backend" -listen "${value[RUN_BACKEND_B]}" -name backend-b &
names[$!]=backend-b
"$bin/vipd" --config "$cfgfile" &
names[$!]=vipd
echo "vipd: frontend http://${value[RUN_FRONTEND]}/  admin http://${value[RUN_ADMIN]}/status  (Ctrl-C stops)"

status=0
wait -n -p ended "${!names[@]}" || status=$?
echo "run: ${names[$ended]} ended on its own (status $status); stopping the others" >&2
unset "names[$ended]"
exit 1
