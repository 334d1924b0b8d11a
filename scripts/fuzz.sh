#!/usr/bin/env bash
# make fuzz: every fuzz target, one after the other, for FUZZTIME each. The
# targets are found, not listed: the packages with a func Fuzz in a test
# file, then `go test -list` in each, so a new target cannot be left out. A
# crasher fails the run and is written to that package's
# testdata/fuzz/FuzzX/. Minimizing each new input is capped at 5s: Go's
# default of 60s would use up a short run. FUZZFLAGS passes more flags
# (-parallel 1: one worker).
#
# Go 1.26's fuzzing coordinator can fail a target that found nothing, with a
# bare "context deadline exceeded", when -fuzztime ends while a worker is in
# the middle of an input (golang/go#75804, fixed in Go 1.27). Such a run
# wrote no failing input and printed nothing else: it is said so, and the
# target runs once more. A run that wrote an input, or failed any other way,
# fails make fuzz.
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
read -r -a flags <<<"${FUZZFLAGS:-}"

# coordinator_race reports whether the output in $1 shows target $2 failed
# by golang/go#75804 alone: its FAIL line followed only by the deadline.
coordinator_race() {
	awk -v t="$2" '
		$0 ~ "^--- FAIL: " t " " { getline; race = ($0 == "    context deadline exceeded"); getline; race = race && ($0 == "FAIL") }
		/Failing input written to/ { written = 1 }
		END { exit !(race && !written) }' "$1"
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for target in $("$GO" test -list '^Fuzz' "$dir" | grep '^Fuzz'); do
		corpus="$dir/testdata/fuzz/$target"
		for attempt in 1 2; do
			echo "== $dir $target ($FUZZTIME)"
			before=$(ls "$corpus" 2>/dev/null || true)
			if "$GO" test -run '^$' -fuzz "^$target\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s "${flags[@]}" "$dir" 2>&1 | tee "$out"; then
				break
			fi
			if [ "$(ls "$corpus" 2>/dev/null || true)" != "$before" ] || ! coordinator_race "$out" "$target"; then
				exit 1
			fi
			echo "== $target: go's fuzzing coordinator failed the run at the end of -fuzztime with no failing input (golang/go#75804, fixed in Go 1.27): not a finding"
			if [ "$attempt" = 2 ]; then
				echo "== $target: the same twice; going on"
			fi
		done
	done
done
