##@ Node agent (nodeagent/)

BINS += $(BIN)/slimvirt-node

$(BIN)/slimvirt-node: $(GO_SOURCES) ## Build the node agent (chains the CNI plugin, serves the kvm/tun device plugins, reports VMI status, serves per-VM metrics)
	CGO_ENABLED=0 go build -trimpath -o $@ ./nodeagent/cmd/slimvirt-node

TEST_TARGETS += test-nodeagent
.PHONY: test-nodeagent
test-nodeagent: ## Test the node agent (CNI install/uninstall, device plugins against a stand-in kubelet, VMI status reporting against a real apiserver)
	go test -count=1 ./nodeagent/...
