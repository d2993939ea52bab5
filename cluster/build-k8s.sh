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

mod="$out/src"
mkdir -p "$out/bin"
# shellcheck source=cluster/k8s-module.sh
. "$(dirname "$0")/k8s-module.sh"
k8s_module "$mod" slimvirt.local/k8sbuild "$K8S_VERSION" $(printf 'k8s.io/kubernetes/cmd/%s ' "${cmds[@]}")
cd "$mod"
for c in "${cmds[@]}"; do
  [ -x "$out/bin/$c" ] && continue
  start=$(date +%s)
  echo "building $c $K8S_VERSION ..."
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$out/bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$out/bin/$c.tmp" "$out/bin/$c"
  echo "built $c in $(( $(date +%s) - start ))s"
done
