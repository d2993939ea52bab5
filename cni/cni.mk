##@ CNI plugin (cni/)

CNI_REF_PLUGINS ?= $(SLIMVIRT_CACHE)/cni-test-plugins/v1.9.1
CNI_TEST_PKGS := ./cni/...

BINS += $(BIN)/slimvirt-cni $(BIN)/slimvirt-vmnet

$(BIN)/slimvirt-cni: $(GO_SOURCES) ## Build the chained CNI plugin (static)
	CGO_ENABLED=0 go build -trimpath -o $@ ./cni/cmd/slimvirt-cni

$(BIN)/slimvirt-vmnet: $(GO_SOURCES) ## Build the by-hand DHCP/ARP side of the binding (debugging)
	CGO_ENABLED=0 go build -trimpath -o $@ ./cni/cmd/slimvirt-vmnet

.PHONY: cni-ref-plugins
cni-ref-plugins: ## Build the reference CNI plugins the tests chain ours after
	@test -x $(CNI_REF_PLUGINS)/bridge -a -x $(CNI_REF_PLUGINS)/ptp -a -x $(CNI_REF_PLUGINS)/host-local -a -x $(CNI_REF_PLUGINS)/loopback || \
	  GOBIN=$(CNI_REF_PLUGINS) CGO_ENABLED=0 GOFLAGS= go install \
	    github.com/containernetworking/plugins/plugins/main/bridge@v1.9.1 \
	    github.com/containernetworking/plugins/plugins/main/ptp@v1.9.1 \
	    github.com/containernetworking/plugins/plugins/ipam/host-local@v1.9.1 \
	    github.com/containernetworking/plugins/plugins/main/loopback@v1.9.1

# The guest tests boot the test guest that images/images.mk builds.
CNI_TEST_GUEST := $(if $(GUEST_OUT),$(GUEST_OUT)/vmlinuz $(GUEST_OUT)/initrd.gz)

TEST_TARGETS += test-cni
.PHONY: test-cni
test-cni: cni-ref-plugins $(CNI_TEST_GUEST) ## Test the CNI plugin, DHCP/ARP and installer in real netns and QEMU (root)
	$(if $(GUEST_OUT),SLIMVIRT_GUEST_DIR=$(GUEST_OUT)) SLIMVIRT_CNI_REF_PLUGINS=$(CNI_REF_PLUGINS) go test -p 1 -count=1 -timeout 10m $(CNI_TEST_PKGS)

BENCH_TARGETS += bench-cni
.PHONY: bench-cni
bench-cni: cni-ref-plugins ## Measure ADD/DEL latency of a chain with and without slimvirt (root)
	@mkdir -p bench/results
	SLIMVIRT_CNI_BENCH=1 SLIMVIRT_CNI_REF_PLUGINS=$(CNI_REF_PLUGINS) go test -count=1 -run '^TestLatency$$' -v -timeout 15m ./cni/plugin/ | grep -v '^=== RUN' | tee bench/results/cni.txt
