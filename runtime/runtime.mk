# runtime/: the launcher (slimvirt-launcher) and the containerDisk copier (slimvirt-diskcopy).

BINS += $(BIN)/slimvirt-launcher $(BIN)/slimvirt-diskcopy
TEST_TARGETS += test-runtime
BENCH_TARGETS += bench-runtime

RUNTIME_SOURCES := $(shell find runtime api cni -name '*.go' 2>/dev/null) go.mod go.sum
GUEST_DIR ?= $(OUT)/guest

$(BIN)/slimvirt-launcher: $(RUNTIME_SOURCES)
	@mkdir -p $(BIN)
	CGO_ENABLED=1 go build -trimpath -ldflags '-s -w' -o $@ ./runtime/cmd/slimvirt-launcher

$(BIN)/slimvirt-diskcopy: $(RUNTIME_SOURCES)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o $@ ./runtime/cmd/slimvirt-diskcopy

.PHONY: test-runtime
test-runtime: $(GUEST_DIR)/disk.qcow2 $(GUEST_DIR)/disk.raw ## Test the runtime: domain XML goldens, ISO, disks, and real libvirtd + QEMU (TCG) boots (root)
	SLIMVIRT_GUEST_DIR=$(GUEST_DIR) go test -count=1 -timeout 8m ./runtime/...

.PHONY: bench-runtime
bench-runtime: $(GUEST_DIR)/disk.qcow2 ## Measure the launcher's memory (launcher + libvirtd + virtlogd RSS, QEMU overhead) with a 256 MiB guest
	@mkdir -p bench/results
	SLIMVIRT_GUEST_DIR=$(GUEST_DIR) SLIMVIRT_BENCH=1 go test -count=1 -timeout 5m -run TestMemoryFootprint -v ./runtime/launcher/ | tee bench/results/runtime.txt
