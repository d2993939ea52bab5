#!/usr/bin/env bash
# Builds the Kubernetes commands the local cluster runs, from the Go module proxy, and caches
# them by version: $SLIMVIRT_CACHE/k8s/<version>/bin/{kube-apiserver,kubelet,...,kubectl}.
# A second run with the same version does nothing.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.37.2}
CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}
out="$CACHE/k8s/$K8S_VERSION"
cmds=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl)

have_all() { for c in "${cmds[@]}"; do [ -x "$out/bin/$c" ] || return 1; done; }
if have_all; then echo "kubernetes $K8S_VERSION: cached in $out/bin"; exit 0; fi

staging=${K8S_VERSION/#v1/v0}   # staging modules are tagged v0.X.Y for v1.X.Y
mod="$out/src"
mkdir -p "$mod" "$out/bin"
cd "$mod"
go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
upstream=$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/go.mod
{
  echo "module slimvirt.local/k8sbuild"
  echo
  grep -E '^go [0-9.]+' "$upstream"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  grep -E '=> \./staging/' "$upstream" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
for c in "${cmds[@]}"; do
  [ -x "$out/bin/$c" ] && continue
  start=$(date +%s)
  echo "building $c $K8S_VERSION ..."
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$out/bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$out/bin/$c.tmp" "$out/bin/$c"
  echo "built $c in $(( $(date +%s) - start ))s"
done
