# vipd — build, test, run, benchmark.
GO      ?= go
BIN     := bin
GOFLAGS ?=
PKGS    := ./...

.PHONY: build test run demo bench bench-failover lint clean

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/vipd ./cmd/vipctl ./cmd/demo-backend

# Every package, one at a time (-p 1): the election and end-to-end tests time
# failovers and must not share the two cores with another test binary.
# As root this includes the namespace and end-to-end tests, which use bin/.
test: build
	$(GO) test -race -count=1 -p 1 -timeout 20m $(PKGS)

# A single node on loopback with two demo backends behind it:
# curl http://127.0.0.1:8080/ answers from backend-a and backend-b in turn.
run: build
	@trap 'kill 0' INT TERM EXIT; \
	$(BIN)/demo-backend -listen 127.0.0.1:9001 -name backend-a & \
	$(BIN)/demo-backend -listen 127.0.0.1:9002 -name backend-b & \
	mkdir -p .vipd-data; \
	echo "vipd: frontend http://127.0.0.1:8080/  admin http://127.0.0.1:9900/status  (Ctrl-C stops)"; \
	$(BIN)/vipd

# The failover bed in network namespaces (needs root).
demo: build
	$(GO) run ./e2e/cmd/demo

bench: build
	bench/run.sh

bench-failover: build
	$(GO) run ./e2e/cmd/benchfailover

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Every fuzz target, one after the other, for FUZZTIME each. The targets are
# found, not listed: the packages with a func Fuzz in a test file, then
# `go test -list` in each, so a new target cannot be left out. A crasher
# fails the run and is written to that package's testdata/fuzz/FuzzX/.
# Minimizing each new input is capped at 5s: Go's default of 60s would use
# up a short run. FUZZFLAGS passes more flags (-parallel 1: one worker).
.PHONY: fuzz
FUZZTIME  ?= 30s
FUZZFLAGS ?=
fuzz:
	@set -e; for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		list=$$($(GO) test -list '^Fuzz' $$dir); \
		for target in $$(echo "$$list" | grep '^Fuzz'); do \
			echo "== $$dir $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $(FUZZFLAGS) $$dir; \
		done; \
	done

clean:
	rm -rf $(BIN) .vipd-data
