# Pulse build and development tasks. Run "make help" for the list.

GO ?= go
# Generator versions for "make proto"; generated code is committed, so
# changing one of these changes the generated files.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1

BIN := $(CURDIR)/bin

.PHONY: help build run test test-short test-faults lint proto bench clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## Build bin/pulse.
	$(GO) build -buildvcs=auto -o $(BIN)/pulse ./cmd/pulse

run: build ## Run all roles in one process on an embedded in-memory Redis.
	$(BIN)/pulse serve

test: ## Run every test with the race detector (needs redis-server and redis-cli on PATH).
	$(GO) test -race -count=1 -timeout 20m ./...

test-faults: ## Run the fault-injection suite: real processes, killed, frozen, skewed (about 5 minutes).
	$(GO) test -race -count=1 -tags faults -parallel 4 -timeout 20m ./internal/faults/...

test-short: ## Run the fast tests only.
	$(GO) test -race -count=1 -short ./...

bench: build ## Run the benchmarks (about 8 minutes) and print the table; BENCH_FLAGS adds flags.
	$(GO) build -o $(BIN)/pulse-bench ./cmd/pulse-bench
	$(BIN)/pulse-bench --pulse $(BIN)/pulse $(BENCH_FLAGS)

lint: ## Run go vet and check formatting.
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Regenerate the Go code of proto/*.proto.
	PATH=$(BIN):$$PATH buf lint
	PATH=$(BIN):$$PATH buf generate

clean: ## Remove build output.
	rm -rf $(BIN)
