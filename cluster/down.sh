#!/usr/bin/env bash
# cluster-down: stops every process of the local cluster and removes its network namespaces,
# mounts, cgroups and runtime state. Keeps certificates, CNI binaries and containerd's images
# in /var/lib/slimvirt-cluster so the next cluster-up is warm.
set -euo pipefail
T0=$EPOCHREALTIME
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cleanup.sh"
require_root cluster-down
lock_cluster
cluster_cleanup "${GRACE:-3}"
step "cluster down"
