##@ End to end (local cluster)

KEEP_CLUSTER ?=
E2E_RUN ?= .
E2E_TARGETS += e2e-run

.PHONY: local-install
local-install: ## Install (or upgrade) the chart on the local cluster with its node's paths
	@bash hack/local-install.sh

.PHONY: e2e-setup
e2e-setup: build images images-csi cluster-up cluster-load-images cluster-registry-seed local-install ## Bring up the local cluster with slimvirt installed

.PHONY: e2e-run
e2e-run: ## Run the e2e suite (not the fault drills: make chaos) on the bridge network, then the network tests on calico and vpc (KEEP_CLUSTER=1 keeps the cluster)
	@E2E_RUN='$(E2E_RUN)' KEEP_CLUSTER='$(KEEP_CLUSTER)' bash hack/e2e.sh

.PHONY: e2e-hostile
e2e-hostile: ## Run only the hostile-tenant suite (TestHostile*: attacks by a tenant with the edit role) on the local cluster
	@E2E_RUN='TestHostile' E2E_NET_STYLES= KEEP_CLUSTER='$(KEEP_CLUSTER)' bash hack/e2e.sh

.PHONY: e2e-storage
e2e-storage: ## Run Kubernetes' External Storage suite (e2e.test, built from source) against the CSI driver on the local cluster (E2E_STORAGE_SLOW=0: without [Slow])
	@KEEP_CLUSTER='$(KEEP_CLUSTER)' bash e2e/storagesuite/run.sh

.PHONY: demo
demo: ## Build everything, start the local cluster, install slimvirt and boot examples/vmi-linux.yaml
	@bash hack/demo.sh

BENCH_TARGETS += bench-start bench-cost bench-stop
.PHONY: bench-start
bench-start: ## Measure apply -> Running and -> guest lease for 20 single VMIs and a batch of 10 (local cluster; KEEP_CLUSTER=1 keeps it)
	@$(MAKE) --no-print-directory e2e-setup
	@rc=0; SLIMVIRT_BENCH=1 go test -tags e2e -count=1 -timeout 40m -v -run TestBenchStartLatency ./e2e/ || rc=$$?; \
	  if [ -z "$(KEEP_CLUSTER)" ]; then $(MAKE) --no-print-directory cluster-down; fi; exit $$rc

.PHONY: bench-stop
bench-stop: ## Measure kubectl delete vmi -> launcher pod gone, for a guest that honours ACPI and one that ignores it (local cluster; KEEP_CLUSTER=1 keeps it)
	@$(MAKE) --no-print-directory e2e-setup
	@rc=0; SLIMVIRT_BENCH=1 go test -tags e2e -count=1 -timeout 30m -v -run TestBenchStop ./e2e/ || rc=$$?; \
	  if [ -z "$(KEEP_CLUSTER)" ]; then $(MAKE) --no-print-directory cluster-down; fi; exit $$rc

.PHONY: chaos
chaos: ## Fault drills: kill the controller, node agent, QEMU, libvirtd, restart kubelet/containerd, delete VMs midway (local cluster), then import/upload faults and 200 API mutations (KEEP_CLUSTER=1 keeps the cluster)
	@$(MAKE) --no-print-directory e2e-setup
	@rc=0; go test -tags e2e -count=1 -timeout 40m -v -run 'TestChaos' ./e2e/ || rc=$$?; \
	  if [ -z "$(KEEP_CLUSTER)" ]; then $(MAKE) --no-print-directory cluster-down; fi; \
	  go test -count=1 -v -run 'TestFaults|TestDiskFull' ./csi/importer/ || rc=1; \
	  go test -count=1 -v -run 'TestUpload$$' ./csi/upload/ || rc=1; \
	  go test -count=1 -v -run 'Mutation' ./controller/integration/ || rc=1; \
	  exit $$rc

.PHONY: bench-cost
bench-cost: ## Measure per-VM overhead (128 MiB guest), control-plane CPU/memory with 0 and 20 VMIs, and density of 64 MiB VMIs (local cluster)
	@CPU_ALLOCATION_RATIO=100 $(MAKE) --no-print-directory e2e-setup
	@rc=0; SLIMVIRT_BENCH=1 go test -tags e2e -count=1 -timeout 60m -v -run 'TestBenchOverhead|TestBenchControlPlane|TestBenchDensity' ./e2e/ | grep -v '^=== RUN' || rc=$$?; \
	  if [ -z "$(KEEP_CLUSTER)" ]; then $(MAKE) --no-print-directory cluster-down; fi; exit $$rc
