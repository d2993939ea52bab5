##@ Chart and API reference (charts/)

TEST_TARGETS += test-charts

.PHONY: test-charts
test-charts: ## Lint the chart and dry-run all it renders on a real kube-apiserver; check docs/api-reference.md
	HELM=$(TOOLS_BIN)/helm K8S_BIN=$(K8S_BIN) go test -count=1 -timeout 10m ./charts/... ./hack/apiref/...

.PHONY: api-reference
api-reference: ## Write docs/api-reference.md from the CRDs in charts/slimvirt/crds (after make generate)
	go run ./hack/apiref -crds charts/slimvirt/crds -out docs/api-reference.md
