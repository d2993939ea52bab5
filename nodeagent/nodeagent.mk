##@ Node agent (nodeagent/)

BINS += $(BIN)/slimvirt-node

$(BIN)/slimvirt-node: $(GO_SOURCES) ## Build the node agent (installs and chains the CNI plugin)
	CGO_ENABLED=0 go build -trimpath -o $@ ./nodeagent/cmd/slimvirt-node

TEST_TARGETS += test-nodeagent
.PHONY: test-nodeagent
test-nodeagent: ## Test the node agent binary (install, JSON logs, uninstall on SIGTERM and on demand)
	go test -count=1 ./nodeagent/...
