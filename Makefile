# vipd — build, test, run, benchmark.
GO      ?= go
BIN     := bin
GOFLAGS ?=
PKGS    := ./...

.PHONY: build test run demo bench bench-failover lint clean image

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/vipd ./cmd/vipctl ./cmd/demo-backend

# Every package, one at a time (-p 1): the election and end-to-end tests time
# failovers and must not share the two cores with another test binary.
# As root this includes the namespace and end-to-end tests, which use bin/.
test: build
	$(GO) test -race -count=1 -p 1 -timeout 20m $(PKGS)

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

clean:
	rm -rf $(BIN) .vipd-data
