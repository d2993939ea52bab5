#!/usr/bin/env bash
# Builds the pinned Go tools into $SLIMVIRT_CACHE/tools/<name>-<version> and links them into
# $SLIMVIRT_CACHE/tools/bin. Never uses whatever the machine already has.
# Usage: tools.sh [name...]   (no names: every tool)
set -euo pipefail
CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}
# name, package, version, and the -X flags the tool's own release build sets (helm's: its
# version, and the Kubernetes version it assumes without a cluster -- v1.20 when unset, which
# the chart's kubeVersion refuses -- as its Makefile derives it from its client-go, v0.37).
# golangci-lint needs none: it reads its version from the module build info go install records.
helm_x=helm.sh/helm/v3
tools=(
  "controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen v0.23.0"
  "helm helm.sh/helm/v3/cmd/helm v3.22.0 -X=$helm_x/internal/version.version=v3.22.0 -X=$helm_x/pkg/chartutil.k8sVersionMajor=1 -X=$helm_x/pkg/chartutil.k8sVersionMinor=37 -X=$helm_x/pkg/lint/rules.k8sVersionMajor=1 -X=$helm_x/pkg/lint/rules.k8sVersionMinor=37"
  "golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint v2.15.0"
)
mkdir -p "$CACHE/tools/bin"
for t in "${tools[@]}"; do
  read -r name pkg version xflags <<<"$t"
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  # The flags are part of the cache key: changing them rebuilds.
  dir="$CACHE/tools/$name-$version"
  [ -z "$xflags" ] || dir="$dir-$(printf %s "$xflags" | sha256sum | cut -c1-8)"
  if [ ! -x "$dir/$name" ]; then
    echo "tools: building $name $version"
    GOBIN="$dir" CGO_ENABLED=0 go install -ldflags="$xflags" "$pkg@$version"
  fi
  ln -sfn "$dir/$name" "$CACHE/tools/bin/$name"
done
