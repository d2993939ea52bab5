#!/usr/bin/env bash
# Builds the pinned Go tools into $SLIMVIRT_CACHE/tools/<name>-<version> and links them into
# $SLIMVIRT_CACHE/tools/bin. Never uses whatever the machine already has.
set -euo pipefail
CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}
tools=(
  "controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen v0.23.0"
  "helm helm.sh/helm/v3/cmd/helm v3.22.0"
)
mkdir -p "$CACHE/tools/bin"
for t in "${tools[@]}"; do
  read -r name pkg version <<<"$t"
  dir="$CACHE/tools/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    echo "tools: building $name $version"
    GOBIN="$dir" CGO_ENABLED=0 go install "$pkg@$version"
  fi
  ln -sfn "$dir/$name" "$CACHE/tools/bin/$name"
done
