##@ slimctl

BINS += $(BIN)/slimctl
TEST_TARGETS += test-slimctl

$(BIN)/slimctl: $(GO_SOURCES)
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/slimvirt/slimvirt/slimctl/command.Version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o $@ ./slimctl/cmd/slimctl
	ln -sf slimctl $(BIN)/kubectl-slim

.PHONY: test-slimctl
test-slimctl: guest ## Run slimctl's tests (the web console's boot the test guest and drive headless Chromium)
	SLIMVIRT_GUEST_DIR=$(GUEST_OUT) go test -count=1 -timeout 10m ./slimctl/...

.PHONY: webassets
webassets: ## Re-vendor the web console's noVNC and xterm.js from npm at the pinned versions (hack/webassets.sh)
	bash hack/webassets.sh

.PHONY: test-webconsole
test-webconsole: guest ## Run the web console's tests: headless Chromium on a QEMU guest (UPDATE_SCREENSHOTS=1 rewrites docs/images)
	SLIMVIRT_GUEST_DIR=$(GUEST_OUT) go test -count=1 -v -timeout 10m ./slimctl/webconsole/...
