##@ Controller

BINS += $(BIN)/slimvirt-controller
TEST_TARGETS += test-controller

# The controller's packages; controller/datavolume has its own test target.
CONTROLLER_PKGS = $$(go list ./controller/... ./api/v1alpha1/... | grep -v /controller/datavolume)

$(BIN)/slimvirt-controller: $(GO_SOURCES)
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o $@ ./controller/cmd/slimvirt-controller

.PHONY: controller
controller: $(BIN)/slimvirt-controller ## Build the controller binary (static)

.PHONY: test-controller
test-controller: $(BIN)/slimvirt-controller ## Run the controller's unit tests and its integration tests against a real kube-apiserver + etcd
	K8S_BIN=$(K8S_BIN) SLIMVIRT_CONTROLLER_BIN=$(BIN)/slimvirt-controller \
		go test -count=1 -timeout 20m $(CONTROLLER_PKGS)
