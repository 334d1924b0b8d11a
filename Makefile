# vipd — build, test, run, benchmark.
GO      ?= go
BIN     := bin
GOFLAGS ?=
PKGS    := ./...

.PHONY: build kube-tools test run demo demo-spread bench bench-ceiling bench-failover bench-spread soak-leader-load lint clean image

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/vipd ./cmd/vipctl ./cmd/demo-backend ./e2e/cmd/bedchild

# The Kubernetes control plane of the e2e bed (etcd and kube-apiserver, and
# kubectl to talk to it, for e2e's Kubernetes tests), built from their Go
# modules in tools/, apart from vipd's own. The first build takes minutes;
# Go's build cache makes the next ones quick.
KUBE_BIN := $(abspath $(BIN))/kube
kube-tools:
	$(GO) build -C tools/etcd -o $(KUBE_BIN)/etcd go.etcd.io/etcd/server/v3
	$(GO) build -C tools/kube-apiserver -o $(KUBE_BIN)/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl

# What each target needs from Debian: scripts/deps.sh installs whatever is
# missing when run as root, and otherwise says what skips or fails without it.
# promtool, chromium and buildah are optional: without them one test each
# skips (under CI=true it fails).
TEST_NEEDS           := ip nft haproxy keepalived systemd-analyze promtool chromium buildah
DEMO_NEEDS           := ip
BENCH_NEEDS          := haproxy wrk nginx
SOAK_NEEDS           := haproxy
BENCH_FAILOVER_NEEDS := ip nft keepalived haproxy
BENCH_SPREAD_NEEDS   := ip nft

# Every package, one at a time (-p 1): the election and end-to-end tests time
# failovers and must not share the two cores with another test binary.
# As root this includes the namespace and end-to-end tests, which use bin/.
# internal/testrun prints go test's usual output, then every skipped test
# and why.
# Then every fuzz target for 10 s and a short soak of vipd alone (the full
# ones, with HAProxy beside it: make fuzz, make soak).
test: build kube-tools
	@scripts/deps.sh $(TEST_NEEDS)
	$(GO) run ./internal/testrun -go $(GO) -race -count=1 -p 1 -timeout 20m $(PKGS)
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s
	$(MAKE) --no-print-directory soak-vipd SOAK_SECONDS=20 SOAK_IDLE=1000

# The container image of deploy/container/Dockerfile, tagged $(IMAGE), also
# saved as $(BIN)/vipd-image.tar (docker load, ctr -n k8s.io images import).
# Static binaries on scratch: the build pulls nothing. docker when its daemon
# answers, else buildah (Debian's package, as root; vfs storage works in any
# container or VM).
IMAGE   ?= vipd:latest
BUILDAH ?= buildah --storage-driver vfs
image:
	rm -rf $(BIN)/image && mkdir -p $(BIN)/image && mkdir -m 0700 $(BIN)/image/data
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/image/ ./cmd/vipd ./cmd/vipctl
	@if docker info >/dev/null 2>&1; then \
		set -x; docker build -f deploy/container/Dockerfile -t $(IMAGE) $(BIN)/image && \
		docker save -o $(BIN)/vipd-image.tar $(IMAGE); \
	elif command -v buildah >/dev/null; then \
		set -x; $(BUILDAH) build -f deploy/container/Dockerfile -t $(IMAGE) $(BIN)/image && \
		rm -f $(BIN)/vipd-image.tar && \
		$(BUILDAH) push $(IMAGE) docker-archive:$(BIN)/vipd-image.tar:$(IMAGE); \
	else \
		echo "make image: needs docker (with a running daemon) or buildah (apt-get install buildah)" >&2; exit 1; \
	fi

# A single node on loopback with two demo backends behind it:
# curl http://127.0.0.1:8080/ answers from backend-a and backend-b in turn.
# RUN_FRONTEND, RUN_ADMIN, RUN_RAFT, RUN_GOSSIP, RUN_BACKEND_A, RUN_BACKEND_B
# and RUN_DATA move it (make run RUN_FRONTEND=127.0.0.1:18080); see scripts/run.sh.
run: build
	@BIN=$(BIN) exec scripts/run.sh

# The failover bed in network namespaces (needs root).
demo: build
	@scripts/deps.sh $(DEMO_NEEDS)
	$(GO) run ./e2e/cmd/demo

# The same bed with three spread VIPs, one on each node, and a follower's
# death: only its VIP moves (DEMO_FLAGS=-kill=leader shows the leader's).
DEMO_FLAGS ?=
demo-spread: build
	@scripts/deps.sh $(DEMO_NEEDS)
	$(GO) run ./e2e/cmd/demo -spread $(DEMO_FLAGS)

bench: build
	@scripts/deps.sh $(BENCH_NEEDS)
	bench/run.sh

# make bench with two more targets: bench/cmd/relayceiling, the least relay
# an epoll loop of its own can be in Go, waiting in epoll through the
# runtime's system call (ceiling) and through a raw one (ceiling-raw), and
# moving the bytes in the kernel with a BPF sockmap verdict
# (ceiling-sockmap, needs root): how far each design could take vipd's
# data plane. docs/benchmarks.md.
# BENCH_FLAGS="-rounds 3 -only conns,pairs" narrows it.
BENCH_FLAGS ?=
bench-ceiling: build
	@scripts/deps.sh $(BENCH_NEEDS)
	$(GO) build -o $(BIN)/relayceiling ./bench/cmd/relayceiling
	$(GO) build -ldflags=-X=main.defaultWait=raw -o $(BIN)/relayceiling-raw ./bench/cmd/relayceiling
	$(GO) build -ldflags="-X=main.defaultWait=raw -X=main.defaultRelay=sockmap" -o $(BIN)/relayceiling-sockmap ./bench/cmd/relayceiling
	bench/run.sh -compare ceiling=$(BIN)/relayceiling -compare ceiling-raw=$(BIN)/relayceiling-raw -compare ceiling-sockmap=$(BIN)/relayceiling-sockmap $(BENCH_FLAGS)

# A bounded soak (make test runs soak-vipd briefly): SOAK_IDLE idle connections through
# one vipd plus a steady stream of new short ones for SOAK_SECONDS, then the
# same through HAProxy; fails if RSS, goroutines or descriptors grow in the
# steady phase or do not come back once all close. Both proxies hold two
# descriptors per idle connection (its two sockets: vipd takes a splice pipe
# only while a direction streams), so up to about 9,000 fit the 20,000
# open-file limit; the default stays at 3000. docs/benchmarks.md.
SOAK_SECONDS ?= 180
SOAK_IDLE    ?= 3000
.PHONY: soak soak-vipd
soak: soak-vipd
	$(BIN)/vipsoak -target haproxy -haproxy "$$(command -v haproxy || echo /usr/sbin/haproxy)" -idle $(SOAK_IDLE) -duration $(SOAK_SECONDS)s
soak-vipd: build
	@scripts/deps.sh $(SOAK_NEEDS)
	$(GO) build -o $(BIN)/vipsoak ./bench/cmd/vipsoak
	$(BIN)/vipsoak -target vipd -vipd $(BIN)/vipd -idle $(SOAK_IDLE) -duration $(SOAK_SECONDS)s

# Needs root: the beds are network namespaces. 10 failovers per system
# (vipd lan and fast, keepalived at advert 1 s, 100 ms, 50 ms, 20 ms) and
# fault, every outage, vipd's phases, the CPU and the load averages; then
# the spread scenario: three VIPs, one per node (vipd placement: spread,
# keepalived one VRRP instance per VIP at advert 0.1 s), 10 node deaths
# and 10 cuts (3 s of dropped frames, link up) each (vipd: a follower's and
# the leader's); about 27 minutes.
# BENCH_FAILOVER_FLAGS="-trials 3 -systems vipd-fast" narrows both.
BENCH_FAILOVER_SPREAD_SYSTEMS ?= vipd-lan,vipd-fast,keepalived-100ms
bench-failover: build
	@scripts/deps.sh $(BENCH_FAILOVER_NEEDS)
	$(GO) run ./e2e/cmd/benchfailover $(BENCH_FAILOVER_FLAGS)
	$(GO) run ./e2e/cmd/benchfailover -spread -systems $(BENCH_FAILOVER_SPREAD_SYSTEMS) $(BENCH_FAILOVER_FLAGS)

# The flapping tests at full length (needs root): 5 runs of 60 s each, with
# the leader's own proxy saturated and with outside CPU load, every profile.
# make test runs them once for 15 s: the proxy load with lan and wan, the
# outside load with wan (election's TestNoFlappingUnderFullCPULoad has the rest).
soak-leader-load: build
	E2E_LOAD_TRIALS=5 E2E_LOAD_SECONDS=60 E2E_PROXY_LOAD_PROFILES="lan fast wan" E2E_OUTSIDE_LOAD_PROFILES="lan fast wan" $(GO) test -count=1 -v -timeout 60m -run 'TestNoFlapping' ./e2e/

# The spread VIP scenarios (e2e/spread_test.go: three nodes, three spread
# VIPs) SPREAD_TRIALS times each, every outage listed, with the cluster on
# SPREAD_TIMING (empty: the bed's lan); needs root. The whole log is kept
# in $(BIN)/bench-spread[-TIMING].log; the RESULT lines are printed.
# docs/benchmarks.md.
SPREAD_TRIALS ?= 10
SPREAD_TIMING ?=
SPREAD_LOG    := $(BIN)/bench-spread$(if $(SPREAD_TIMING),-$(SPREAD_TIMING)).log
bench-spread: build
	@scripts/deps.sh $(BENCH_SPREAD_NEEDS)
	@E2E_TRIALS=$(SPREAD_TRIALS) E2E_SPREAD_TIMING=$(SPREAD_TIMING) $(GO) test -count=1 -v -timeout 60m -run '^TestSpread' ./e2e/ > $(SPREAD_LOG) 2>&1; rc=$$?; \
		grep -E 'RESULT|^(--- |    --- |ok|FAIL)' $(SPREAD_LOG); exit $$rc

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Every fuzz target for FUZZTIME each (scripts/fuzz.sh: how they are found,
# and the Go 1.26 coordinator race it tells from a finding). A crasher fails
# the run and is written to that package's testdata/fuzz/FuzzX/. FUZZFLAGS
# passes more flags (-parallel 1: one worker).
.PHONY: fuzz
FUZZTIME  ?= 30s
FUZZFLAGS ?=
fuzz:
	@GO="$(GO)" FUZZTIME="$(FUZZTIME)" FUZZFLAGS="$(FUZZFLAGS)" scripts/fuzz.sh

clean:
	rm -rf $(BIN) .vipd-data
