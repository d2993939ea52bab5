##@ slimctl

BINS += $(BIN)/slimctl
TEST_TARGETS += test-slimctl

$(BIN)/slimctl: $(GO_SOURCES)
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/slimvirt/slimvirt/slimctl/command.Version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o $@ ./slimctl/cmd/slimctl
	ln -sf slimctl $(BIN)/kubectl-slim

.PHONY: test-slimctl
test-slimctl: ## Run slimctl's unit tests
	go test ./slimctl/...
