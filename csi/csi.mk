##@ CSI driver and DataVolumes (csi/)

CSI_SIDECARS_DIR := $(SLIMVIRT_CACHE)/csi-sidecars
CSI_PROVISIONER_VERSION ?= v6.4.0
CSI_RESIZER_VERSION ?= v2.3.0
# external-snapshotter: the csi-snapshotter sidecar and snapshot-controller, one version.
CSI_SNAPSHOTTER_VERSION ?= v8.7.0
CSI_PROVISIONER := $(CSI_SIDECARS_DIR)/csi-provisioner-$(CSI_PROVISIONER_VERSION)/csi-provisioner
CSI_RESIZER := $(CSI_SIDECARS_DIR)/csi-resizer-$(CSI_RESIZER_VERSION)/csi-resizer
CSI_SNAPSHOTTER := $(CSI_SIDECARS_DIR)/csi-snapshotter-$(CSI_SNAPSHOTTER_VERSION)/csi-snapshotter
CSI_SNAPSHOT_CONTROLLER := $(CSI_SIDECARS_DIR)/snapshot-controller-$(CSI_SNAPSHOTTER_VERSION)/snapshot-controller
CSI_SIDECAR_BINS := $(CSI_PROVISIONER) $(CSI_RESIZER) $(CSI_SNAPSHOTTER) $(CSI_SNAPSHOT_CONTROLLER)
CSI_PKGS := ./csi/... ./controller/datavolume/...

BINS += $(BIN)/slimvirt-csi
TEST_TARGETS += test-csi
BENCH_TARGETS += bench-csi

$(BIN)/slimvirt-csi: $(GO_SOURCES) ## Build the CSI driver (static)
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o $@ ./csi/cmd/slimvirt-csi

.PHONY: slimvirt-csi
slimvirt-csi: $(BIN)/slimvirt-csi ## Build the CSI driver binary into _output/bin

$(CSI_SIDECAR_BINS):
	PROVISIONER_VERSION=$(CSI_PROVISIONER_VERSION) RESIZER_VERSION=$(CSI_RESIZER_VERSION) \
		SNAPSHOTTER_VERSION=$(CSI_SNAPSHOTTER_VERSION) bash csi/hack/sidecars.sh

.PHONY: csi-sidecars
csi-sidecars: $(CSI_SIDECAR_BINS) ## Build external-provisioner, external-resizer, csi-snapshotter and snapshot-controller from the Go module proxy (cached)

$(OUT)/images/csi-sidecars.tar: $(CSI_SIDECAR_BINS)
	@mkdir -p $(@D)
	go run ./images/cmd/imagebuild -tag slimvirt.io/csi-sidecars:dev -o $@ \
		-add $(CSI_PROVISIONER):/usr/bin/csi-provisioner:0755 \
		-add $(CSI_RESIZER):/usr/bin/csi-resizer:0755 \
		-add $(CSI_SNAPSHOTTER):/usr/bin/csi-snapshotter:0755 \
		-add $(CSI_SNAPSHOT_CONTROLLER):/usr/bin/snapshot-controller:0755

.PHONY: images-csi
images-csi: $(OUT)/images/csi-sidecars.tar ## Build the CSI sidecars image (slimvirt.io/csi-sidecars:dev: the sidecars and snapshot-controller)

.PHONY: test-csi
test-csi: $(CSI_PROVISIONER) $(CSI_RESIZER) ## Test the CSI driver (csi-sanity mount+block, imports, uploads, DataVolumes; root)
	CSI_PROVISIONER=$(CSI_PROVISIONER) CSI_RESIZER=$(CSI_RESIZER) K8S_BIN=$(K8S_BIN) go test -count=1 -timeout 15m $(CSI_PKGS)

.PHONY: bench-csi
bench-csi: ## Benchmark imports, clones and CreateVolume against the physical baseline (root)
	@mkdir -p bench/results
	go test -count=1 -timeout 30m -run '^$$' -bench . -benchtime 1x ./csi/bench/ | tee bench/results/csi.txt
