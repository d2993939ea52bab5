#!/usr/bin/env bash
# cluster-load-images: imports docker-archive tarballs (the arguments: files, or directories
# whose *.tar are taken) into the local cluster's containerd, namespace k8s.io. A tarball
# whose size and mtime match its last import, and whose tags are still present, is skipped.
set -euo pipefail
T0=$EPOCHREALTIME
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/images.sh"
require_root cluster-load-images
[ -S "$CONTAINERD_SOCK" ] && "${CTR[@]}" version >/dev/null 2>&1 || die "the local cluster is not running; run: make cluster-up"
tars=()
for a in "$@"; do
  if [ -d "$a" ]; then
    for f in "$a"/*.tar; do [ -e "$f" ] && tars+=("$f"); done
  elif [ -f "$a" ]; then
    tars+=("$a")
  else
    die "$a: no such file or directory"
  fi
done
[ ${#tars[@]} -gt 0 ] || { echo "cluster: no image tarballs in $*"; exit 0; }
n=0 skipped=0
for f in "${tars[@]}"; do
  r=$(import_image "$f")
  step "$r $(basename "$f") ($(sed -n 2p "$STATE_DIR/image-stamps/$(basename "$f").stamp"))"
  [ "$r" = skipped ] && skipped=$((skipped + 1)) || n=$((n + 1))
done
step "$n imported, $skipped skipped"
