##@ Node agent (nodeagent/)

BINS += $(BIN)/slimvirt-node

$(BIN)/slimvirt-node: $(GO_SOURCES) ## Build the node agent (installs and chains the CNI plugin, serves the kvm/tun device plugins)
	CGO_ENABLED=0 go build -trimpath -o $@ ./nodeagent/cmd/slimvirt-node

TEST_TARGETS += test-nodeagent
.PHONY: test-nodeagent
test-nodeagent: ## Test the node agent (CNI install/uninstall, device plugins against a stand-in kubelet)
	go test -count=1 ./nodeagent/...
