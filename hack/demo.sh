#!/usr/bin/env bash
# make demo: from a fresh Debian 12 machine to a VM on a real local Kubernetes cluster.
# Each step prints one line with the time it took; a second run reuses every cache.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SLIMVIRT_CACHE:=/var/cache/slimvirt}" "${K8S_VERSION:=v1.37.2}"
export SLIMVIRT_CACHE K8S_VERSION PATH="$SLIMVIRT_CACHE/tools/bin:$SLIMVIRT_CACHE/k8s/$K8S_VERSION/bin:$PATH"
t0=$(date +%s)
step() {
  local name=$1; shift
  local s; s=$(date +%s)
  printf '==> %-40s' "$name"
  local log; log=$(mktemp /tmp/slimvirt-demo.XXXXXX)
  if "$@" >"$log" 2>&1; then
    printf ' done in %3ss (total %ss)\n' "$(( $(date +%s) - s ))" "$(( $(date +%s) - t0 ))"
    rm -f "$log"
  else
    printf ' FAILED after %ss\n' "$(( $(date +%s) - s ))"
    tail -n 40 "$log" >&2
    echo "demo: step '$name' failed; full log: $log" >&2
    exit 1
  fi
}
if [ "$(id -u)" != 0 ]; then
  echo "demo: must run as root (it installs packages and runs a Kubernetes node in a network namespace)" >&2
  exit 1
fi
command -v go >/dev/null || { echo "demo: Go is missing: install Go 1.26 (https://go.dev/dl) and re-run" >&2; exit 1; }

step "install Debian packages and Go tools" make --no-print-directory deps
step "build Kubernetes $K8S_VERSION (cached)" make --no-print-directory k8s
step "build slimvirt binaries" make --no-print-directory build
step "build the test guest" make --no-print-directory guest
step "build images" make --no-print-directory images images-csi
step "start the local cluster" make --no-print-directory cluster-up
step "load images into the cluster" make --no-print-directory cluster-load-images
step "push the user guide's images into the cluster's registry" make --no-print-directory cluster-registry-seed
step "install the slimvirt chart" make --no-print-directory local-install

# shellcheck disable=SC1091
source /var/lib/slimvirt-cluster/cluster.env
export KUBECONFIG
k() { kubectl "$@"; }
k delete -f examples/vmi-linux.yaml --ignore-not-found --wait=true >/dev/null 2>&1 || true
s=$(date +%s)
k apply -f examples/vmi-linux.yaml >/dev/null
wait_running() {
  for _ in $(seq 1 300); do
    phase=$(k get vmi testvmi-nocloud2 -o jsonpath='{.status.phase}' 2>/dev/null || true)
    [ "$phase" = Running ] && return 0
    case "$phase" in Failed|Succeeded) k get vmi testvmi-nocloud2 -o yaml >&2; return 1;; esac
    sleep 1
  done
  return 1
}
step "boot examples/vmi-linux.yaml to Running" wait_running
running=$(( $(date +%s) - s ))
pod=$(k get vmi testvmi-nocloud2 -o jsonpath='{.status.launcherPod}')
wait_marker() {
  for _ in $(seq 1 300); do
    k logs "$pod" -c compute 2>/dev/null | grep -q SLIMVIRT-GUEST-UP && return 0
    sleep 1
  done
  return 1
}
step "wait for the guest's DHCP lease" wait_marker
leased=$(( $(date +%s) - s ))
ip=$(k get vmi testvmi-nocloud2 -o jsonpath='{.status.interfaces[0].ipAddress}')
marker=$(k logs "$pod" -c compute | grep -o 'SLIMVIRT-GUEST-UP.*' | tail -n 1)

cat <<TXT

The VM is running.
  $(k get vmi testvmi-nocloud2 --no-headers | awk '{printf "VMI %s  phase %s  IP %s  node %s", $1, $3, $4, $5}')
  serial console: $marker
  kubectl apply -> Running in ${running}s, -> guest DHCP lease in ${leased}s; demo total $(( $(date +%s) - t0 ))s

Try next:
  export KUBECONFIG=$KUBECONFIG      # or: export KUBECONFIG=\$(make -s kubeconfig)
  export PATH=$SLIMVIRT_CACHE/k8s/$K8S_VERSION/bin:\$PATH
  kubectl get vmi
  kubectl logs $pod -c compute        # the guest's serial console
  kubectl run web --rm -it --restart=Never --image=slimvirt.io/toolbox:dev -- wget -qO- http://$ip/
  make cluster-down                   # remove the cluster and everything it made
TXT
