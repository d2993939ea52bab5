#!/usr/bin/env bash
# cluster-registry-seed: pushes docker-archive tarballs into the local cluster's registry,
# each argument TAR:NAME[:TAG] (NAME as a user writes it after docker.io/, e.g.
# kubevirt/virtio-container-disk:latest). The registry listens on the node namespace's
# loopback, so the push runs there.
set -euo pipefail
T0=$EPOCHREALTIME
. "$(dirname "$0")/lib.sh"
require_root cluster-registry-seed
[ -x "$CLUSTER_OUT/slimvirt-registry" ] || die "no registry binary; run: make cluster-up"
for a in "$@"; do
  tar=${a%%:*} ref=${a#*:}
  [ -f "$tar" ] || die "$tar: no such file"
  in_node "$CLUSTER_OUT/slimvirt-registry" push -addr "$REGISTRY_ADDR" "$tar" "$ref" || die "push $tar as $ref failed"
  step "pushed $(basename "$tar") as docker.io/$ref"
done
