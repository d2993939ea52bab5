#!/usr/bin/env bash
# Builds the CSI sidecars slimvirt deploys next to slimvirt-csi from the Go module proxy and
# caches them by version under $SLIMVIRT_CACHE/csi-sidecars/<name>-<version>/.
# external-provisioner has replace directives, so it is built in place with its own go.mod;
# external-resizer installs with plain `go install`.
set -euo pipefail
CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}/csi-sidecars
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v6.4.0}
RESIZER_VERSION=${RESIZER_VERSION:-v2.3.0}
mkdir -p "$CACHE"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

prov="$CACHE/csi-provisioner-$PROVISIONER_VERSION/csi-provisioner"
if [ ! -x "$prov" ]; then
  echo "sidecars: building csi-provisioner $PROVISIONER_VERSION"
  work=$(mktemp -d)
  trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
  dir=$(cd "$work" && GOFLAGS= go mod download -json "github.com/kubernetes-csi/external-provisioner/v6@$PROVISIONER_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  cp -r "$dir" "$work/src" && chmod -R u+w "$work/src"
  mkdir -p "$(dirname "$prov")"
  (cd "$work/src" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X main.version=$PROVISIONER_VERSION" -o "$prov.tmp" ./cmd/csi-provisioner)
  mv "$prov.tmp" "$prov"
fi

res="$CACHE/csi-resizer-$RESIZER_VERSION/csi-resizer"
if [ ! -x "$res" ]; then
  echo "sidecars: building csi-resizer $RESIZER_VERSION"
  mkdir -p "$(dirname "$res")"
  GOBIN="$(dirname "$res")" go install -trimpath -ldflags "-s -w" "github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer@$RESIZER_VERSION"
fi
echo "sidecars: $prov $res"
