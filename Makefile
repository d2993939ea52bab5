# slimvirt: virtual machines on Kubernetes, slim and composable.
# `make help` lists the targets. Each module adds its own targets in its folder's *.mk file.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

SLIMVIRT_CACHE ?= /var/cache/slimvirt
K8S_VERSION ?= v1.37.2
OUT := $(CURDIR)/_output
BIN := $(OUT)/bin
TOOLS_BIN := $(SLIMVIRT_CACHE)/tools/bin
K8S_BIN := $(SLIMVIRT_CACHE)/k8s/$(K8S_VERSION)/bin
export SLIMVIRT_CACHE K8S_VERSION
export PATH := $(TOOLS_BIN):$(K8S_BIN):$(PATH)

# Modules append to these.
BINS :=
TEST_TARGETS :=
E2E_TARGETS :=
BENCH_TARGETS :=

GO_SOURCES := $(shell find . -name '*.go' -not -path './_output/*' 2>/dev/null) go.mod go.sum

##@ Setup

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z0-9_-]+:.*##/ {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the Debian packages and the pinned Go tools (helm, controller-gen, golangci-lint)
	@bash hack/deps.sh
	@bash hack/tools.sh

##@ Build

.PHONY: generate
generate: ## Regenerate deepcopy code and CRDs from api/
	controller-gen object paths=./api/...
	controller-gen crd paths=./api/... output:crd:dir=charts/slimvirt/crds
	bash hack/crd-quantity-pattern.sh charts/slimvirt/crds/*.yaml

##@ Test

.PHONY: test
test: ## Run the unit and integration tests (as root: netns, libvirt, apiserver)
	@$(MAKE) --no-print-directory test-unit $(TEST_TARGETS) fuzz-short

.PHONY: vet
vet: ## Run go vet over the whole tree, the e2e tests included
	go vet -tags e2e ./...
	go vet -tags guestkernel ./...

.PHONY: lint
lint: vet ## Vet, then run golangci-lint (.golangci.yml) over the whole tree, the e2e tests included
	@bash hack/tools.sh golangci-lint
	$(TOOLS_BIN)/golangci-lint run ./...

.PHONY: test-unit
test-unit: ## Run the tests that need nothing but Go
	go test ./api/... ./bench/... ./images/... ./internal/... ./e2e/storagesuite/...

.PHONY: fuzz
fuzz: ## Fuzz every parser of tenant input (each Go fuzz target) for FUZZTIME (default 30s) each
	@FUZZTIME=$(or $(FUZZTIME),30s) bash hack/fuzz.sh

.PHONY: fuzz-short
fuzz-short: ## Fuzz every target for 5000 inputs each (part of make test)
	@FUZZTIME=5000x bash hack/fuzz.sh

.PHONY: e2e
e2e: ## Run the end-to-end tests on the local cluster
	@$(MAKE) --no-print-directory $(E2E_TARGETS)

.PHONY: bench
bench: ## Run every benchmark (CNI, launcher memory, imports, start latency, per-VM and control-plane cost, density; root) and write bench/results/README.md
	@$(MAKE) --no-print-directory $(BENCH_TARGETS)
	@bash hack/bench-summary.sh

.PHONY: clean
clean: ## Remove build output (not the caches in $(SLIMVIRT_CACHE))
	rm -rf $(OUT)

-include cluster/cluster.mk
-include images/images.mk
-include cni/cni.mk
-include runtime/runtime.mk
-include controller/controller.mk
-include csi/csi.mk
-include nodeagent/nodeagent.mk
-include slimctl/slimctl.mk
-include charts/charts.mk
-include e2e/e2e.mk

# Tests that need a kernel with project quotas run in a QEMU guest on Debian's kernel
# (docs/testing-guest-kernel.md); GUEST_KERNEL comes from images/images.mk.
TEST_TARGETS += test-guest-kernel

.PHONY: test-guest-kernel
test-guest-kernel: $(GUEST_KERNEL)/vmlinuz ## Run the tests that need project quotas (the CSI driver's project quotas) as root in a QEMU guest on Debian's 6.1 kernel (docs/testing-guest-kernel.md)
	bash hack/guestkernel/run.sh -tags guestkernel ./csi/quota
	bash hack/guestkernel/run.sh -tags guestkernel ./csi/driver -run 'TestQuotaPool|TestRequireQuota'

##@ Everything

# After the includes: prerequisites are expanded when read.
.PHONY: build
build: $(BINS) ## Build every binary into _output/bin
