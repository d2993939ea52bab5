##@ Local cluster

CLUSTER_NET ?= bridge
export CLUSTER_NET

.PHONY: k8s
k8s: ## Build and cache the Kubernetes v1.37.2 binaries (idempotent)
	@bash cluster/build-k8s.sh

.PHONY: cluster-up
cluster-up: k8s ## Start the local single-node cluster in netns slimvirt-node (CLUSTER_NET=bridge|calico|vpc)
	@bash cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove its processes, namespaces, mounts and cgroups
	@bash cluster/down.sh

.PHONY: cluster-status
cluster-status: ## Show the local cluster's processes, health, nodes and pods
	@bash cluster/status.sh

.PHONY: cluster-restart
cluster-restart: ## Restart one node component of the local cluster: COMPONENT=kubelet|containerd|kube-proxy
	@bash cluster/restart.sh $(COMPONENT)

.PHONY: kubeconfig
kubeconfig: ## Print the path of the local cluster's admin kubeconfig
	@echo /var/lib/slimvirt-cluster/admin.kubeconfig

.PHONY: cluster-load-images
cluster-load-images: ## Import _output/images/*.tar into the local cluster's containerd
	@bash cluster/load-images.sh $(OUT)/images

.PHONY: cluster-registry-seed
cluster-registry-seed: guide-images ## Push the user guide's images into the local cluster's registry (docker.io/kubevirt/... resolve there)
	@bash cluster/registry-seed.sh $(OUT)/images/guest.tar:kubevirt/fedora-cloud-container-disk-demo:latest \
		$(OUT)/images/guest.tar:kubevirt/cirros-container-disk-demo:latest \
		$(OUT)/guide-images/virtio-container-disk.tar:kubevirt/virtio-container-disk:latest

.PHONY: test-cluster
test-cluster: k8s ## Bring the local cluster up and down and check pods, logs, exec, Services and cleanup (slow)
	@bash cluster/test.sh

.PHONY: test-cluster-all
test-cluster-all: k8s ## Run test-cluster with CLUSTER_NET=bridge, calico and vpc (slow)
	@for net in bridge calico vpc; do CLUSTER_NET=$$net bash cluster/test.sh || exit 1; done

.PHONY: cni-plugins
cni-plugins: ## Build and cache the reference CNI plugins v1.9.1 (bridge, host-local, loopback, portmap, ptp)
	@bash -c '. cluster/lib.sh; . cluster/images.sh; ensure_cni_plugins_cache'

.PHONY: test-cluster-unit
test-cluster-unit: cni-plugins ## Test the harness's Go parts (test CNI plugin, netns forwarder) in real netns (root)
	go test -count=1 ./cluster/...

TEST_TARGETS += test-cluster-unit
