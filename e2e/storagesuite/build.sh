#!/usr/bin/env bash
# Builds Kubernetes' e2e test binary (e2e.test, from k8s.io/kubernetes/test/e2e) and agnhost
# (the test image's command, from k8s.io/kubernetes/test/images/agnhost) at the cluster's
# Kubernetes version, from the Go module proxy, and caches them by version:
# $SLIMVIRT_CACHE/k8s/<version>/e2e/bin/{e2e.test,agnhost}, with the ginkgo runner at the
# version Kubernetes pins (it runs the specs in parallel) and the example volume populator one
# spec deploys. A second run does nothing.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.37.2}
CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}
out="$CACHE/k8s/$K8S_VERSION/e2e"
POPULATOR_VERSION=v1.2.0   # hello-populator v1.0.1, which the suite names, is not on the proxy
if [ -x "$out/bin/e2e.test" ] && [ -x "$out/bin/agnhost" ] && [ -x "$out/bin/ginkgo" ] && [ -x "$out/bin/hello-populator" ]; then
  echo "e2e.test, agnhost, ginkgo and hello-populator $K8S_VERSION: cached in $out/bin"; exit 0
fi
mkdir -p "$out/bin"
# shellcheck source=cluster/k8s-module.sh
. "$(dirname "$0")/../../cluster/k8s-module.sh"
k8s_module "$out/src" slimvirt.local/k8se2e "$K8S_VERSION" k8s.io/kubernetes/test/e2e k8s.io/kubernetes/test/images/agnhost
cd "$out/src"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
start=$(date +%s)
if [ ! -x "$out/bin/e2e.test" ]; then
  echo "building e2e.test $K8S_VERSION (several minutes) ..."
  CGO_ENABLED=0 GOFLAGS=-mod=mod go test -c -vet=off -trimpath -ldflags "$ldflags" -o "$out/bin/e2e.test.tmp" k8s.io/kubernetes/test/e2e
  mv "$out/bin/e2e.test.tmp" "$out/bin/e2e.test"
fi
if [ ! -x "$out/bin/agnhost" ]; then
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out/bin/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost
  mv "$out/bin/agnhost.tmp" "$out/bin/agnhost"
fi
if [ ! -x "$out/bin/ginkgo" ]; then
  ginkgo=$(awk '$1 == "github.com/onsi/ginkgo/v2" {print $2}' "$upstream")
  GOBIN="$out/bin" CGO_ENABLED=0 GOFLAGS= go install -trimpath "github.com/onsi/ginkgo/v2/ginkgo@$ginkgo"
fi
# The volume populator the "any volume data source" spec deploys, from its module's own go.sum.
if [ ! -x "$out/bin/hello-populator" ]; then
  mod=github.com/kubernetes-csi/lib-volume-populator@$POPULATOR_VERSION
  go mod download -json "$mod" >/dev/null
  tmp=$(mktemp -d)
  cp -r "$(go env GOMODCACHE)/$mod" "$tmp/src" && chmod -R u+w "$tmp/src" && rm -rf "$tmp/src/vendor"
  (cd "$tmp/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out/bin/hello-populator" ./example/hello-populator)
  rm -rf "$tmp"
fi
echo "e2e.test, agnhost, ginkgo and hello-populator $K8S_VERSION ready in $(( $(date +%s) - start ))s"
