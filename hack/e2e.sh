#!/usr/bin/env bash
# make e2e: the whole suite on the local cluster with the bridge network, then the network
# tests again on the calico-style and VPC-style networks. The fault drills (TestChaos*) run
# from their own target, make chaos (E2E_SKIP). The cluster is removed at the end unless
# KEEP_CLUSTER is set.
set -uo pipefail
cd "$(dirname "$0")/.."
run=${E2E_RUN:-.}
skip=${E2E_SKIP-TestChaos}
styles=${E2E_NET_STYLES-calico vpc}
rc=0
gotest() { go test -tags e2e -count=1 -timeout 40m -v -run "$1" ${skip:+-skip "$skip"} ./e2e/; }
finish() {
  [ -n "${KEEP_CLUSTER:-}" ] || make --no-print-directory cluster-down >/dev/null 2>&1 || true
  exit "$rc"
}
trap finish EXIT
make --no-print-directory e2e-setup || { rc=1; exit; }
gotest "$run" || rc=1
for net in $styles; do
  echo "==> e2e network tests on CLUSTER_NET=$net"
  make --no-print-directory cluster-down >/dev/null
  if CLUSTER_NET=$net make --no-print-directory cluster-up cluster-load-images local-install; then
    gotest TestNetworkBindings || rc=1
  else
    rc=1
  fi
done
