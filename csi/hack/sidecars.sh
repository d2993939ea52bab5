#!/usr/bin/env bash
# Builds the CSI sidecars slimvirt deploys next to slimvirt-csi from the Go module proxy and
# caches them by version under $SLIMVIRT_CACHE/csi-sidecars/<name>-<version>/.
# external-provisioner has replace directives, so it is built in place with its own go.mod;
# external-resizer installs with plain `go install`; external-snapshotter (csi-snapshotter and
# snapshot-controller) is built in place too, after dropping its replace of ./client: the module
# zip leaves client/ out, the proxy serves it as its own module at the same version.
set -euo pipefail
CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}/csi-sidecars
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v6.4.0}
RESIZER_VERSION=${RESIZER_VERSION:-v2.3.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.7.0}
mkdir -p "$CACHE"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT

# modsrc copies module@version's source from the module cache into a writable $work/NAME.
modsrc() {
  local dir
  dir=$(cd "$work" && GOFLAGS= go mod download -json "$1@$2" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  cp -r "$dir" "$work/$3" && chmod -R u+w "$work/$3"
}

prov="$CACHE/csi-provisioner-$PROVISIONER_VERSION/csi-provisioner"
if [ ! -x "$prov" ]; then
  echo "sidecars: building csi-provisioner $PROVISIONER_VERSION"
  modsrc github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION" provisioner
  mkdir -p "$(dirname "$prov")"
  (cd "$work/provisioner" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X main.version=$PROVISIONER_VERSION" -o "$prov.tmp" ./cmd/csi-provisioner)
  mv "$prov.tmp" "$prov"
fi

res="$CACHE/csi-resizer-$RESIZER_VERSION/csi-resizer"
if [ ! -x "$res" ]; then
  echo "sidecars: building csi-resizer $RESIZER_VERSION"
  mkdir -p "$(dirname "$res")"
  GOBIN="$(dirname "$res")" go install -trimpath -ldflags "-s -w" "github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer@$RESIZER_VERSION"
fi

snap="$CACHE/csi-snapshotter-$SNAPSHOTTER_VERSION/csi-snapshotter"
ctrl="$CACHE/snapshot-controller-$SNAPSHOTTER_VERSION/snapshot-controller"
if [ ! -x "$snap" ] || [ ! -x "$ctrl" ]; then
  echo "sidecars: building csi-snapshotter and snapshot-controller $SNAPSHOTTER_VERSION"
  modsrc github.com/kubernetes-csi/external-snapshotter/v8 "$SNAPSHOTTER_VERSION" snapshotter
  mkdir -p "$(dirname "$snap")" "$(dirname "$ctrl")"
  (cd "$work/snapshotter" &&
    go mod edit -dropreplace github.com/kubernetes-csi/external-snapshotter/client/v8 \
      -require "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" &&
    go build -trimpath -ldflags "-s -w -X main.version=$SNAPSHOTTER_VERSION" -o "$snap.tmp" ./cmd/csi-snapshotter &&
    go build -trimpath -ldflags "-s -w -X main.version=$SNAPSHOTTER_VERSION" -o "$ctrl.tmp" ./cmd/snapshot-controller)
  mv "$snap.tmp" "$snap"
  mv "$ctrl.tmp" "$ctrl"
fi
echo "sidecars: $prov $res $snap $ctrl"
