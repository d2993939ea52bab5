#!/usr/bin/env bash
# Installs or upgrades the slimvirt chart on the local cluster, with the node's paths and TCG
# emulation allowed (the machines this runs on may have no usable KVM) and hostDisk volumes
# allowed (the e2e tests use one) below the default directory and below /data, where the user
# guide's Windows VM keeps its disk, and waits for it. CPU_ALLOCATION_RATIO (default 10, the
# chart's) sets the CPU a launcher pod requests per vCPU: the density benchmark packs more VMs
# onto the node's two CPUs than 100m each allows.
set -euo pipefail
env_file=/var/lib/slimvirt-cluster/cluster.env
[ -f "$env_file" ] || { echo "local-install: no local cluster (run: make cluster-up)" >&2; exit 1; }
# shellcheck disable=SC1090
source "$env_file"
export KUBECONFIG
# SLIMVIRT_MODULES: all (default), csi (the CSI driver alone) or cni (the CNI plugin alone).
modules=()
case ${SLIMVIRT_MODULES:-all} in
  all) ;;
  csi) modules=(--set controller.enabled=false --set node.agent.enabled=false) ;;
  cni) modules=(--set controller.enabled=false --set storage.enabled=false) ;;
  *) echo "local-install: SLIMVIRT_MODULES=$SLIMVIRT_MODULES: want all, csi or cni" >&2; exit 2 ;;
esac
helm upgrade --install slimvirt charts/slimvirt --namespace slimvirt --create-namespace "${modules[@]}" \
  --set allowEmulation=true \
  --set allowHostDisk=true \
  --set "hostDiskDirs={$STATE_DIR/slimvirt/hostdisks,/data}" \
  --set webConsole.enabled=true \
  --set controller.cpuAllocationRatio="${CPU_ALLOCATION_RATIO:-10}" \
  --set node.cni.binDir="$CNI_BIN_DIR" \
  --set node.cni.confDir="$CNI_CONF_DIR" \
  --set node.stateDir="$STATE_DIR/slimvirt" \
  --set node.kubeletDir="$KUBELET_DIR" \
  --wait --timeout 5m >/dev/null
# Helm renders every object before it creates any, so the chart's VolumeSnapshotClass comes
# with the upgrade after the one that created its CRD (docs/csi.md).
if [ "${SLIMVIRT_MODULES:-all}" != cni ] && { ! kubectl get volumesnapshotclass >/dev/null 2>&1 || [ -z "$(kubectl get volumesnapshotclass -o name)" ]; }; then
  helm upgrade slimvirt charts/slimvirt --namespace slimvirt --reuse-values --wait --timeout 5m >/dev/null
fi
if [ "${SLIMVIRT_MODULES:-all}" = csi ]; then
  echo "local-install: the CSI driver alone installed"
  exit 0
fi
# The node agent chains the plugin into the node's conflist; launcher pods need it.
for _ in $(seq 1 60); do
  if grep -qs '"type": *"slimvirt"' "$CNI_CONF_DIR"/*.conflist; then
    echo "local-install: slimvirt installed and chained into $(ls "$CNI_CONF_DIR"/*.conflist)"
    exit 0
  fi
  sleep 1
done
echo "local-install: the node agent did not chain the CNI plugin into $CNI_CONF_DIR" >&2
kubectl -n slimvirt logs daemonset/slimvirt-node --tail=30 >&2 || true
exit 1
