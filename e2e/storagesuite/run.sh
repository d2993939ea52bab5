#!/usr/bin/env bash
# make e2e-storage: Kubernetes' External Storage e2e suite (e2e.test -storage.testdriver) against
# the slimvirt CSI driver on the local cluster, the way CSI drivers are checked upstream.
# Builds e2e.test, agnhost and ginkgo at the cluster's Kubernetes version (cached), brings the
# local cluster up with slimvirt installed, loads the test images, writes the driver definition
# from the driver's own answers (storage-driverdef), and runs every External Storage spec the
# definition enables, in parallel. Output: _output/e2e-storage/{driver.yaml,e2e.log,junit.xml,
# results.md}.
#   E2E_STORAGE_SLOW=0    leave the [Slow] specs out
#   E2E_STORAGE_PROCS=N   parallel ginkgo processes (default 4)
#   E2E_STORAGE_FOCUS=RE  run only the specs matching RE (inside External Storage)
#   KEEP_CLUSTER=1        keep the cluster afterwards
set -uo pipefail
cd "$(dirname "$0")/../.."
K8S_VERSION=${K8S_VERSION:-v1.37.2}
CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}
bin="$CACHE/k8s/$K8S_VERSION/e2e/bin"
out=_output/e2e-storage
rc=0
finish() {
  [ -n "${KEEP_CLUSTER:-}" ] || make --no-print-directory cluster-down >/dev/null 2>&1 || true
  exit "$rc"
}
bash e2e/storagesuite/build.sh || { rc=1; exit 1; }
trap finish EXIT
make --no-print-directory e2e-setup || { rc=1; exit; }
mkdir -p "$out"
rm -rf "$out"/*
bash e2e/storagesuite/images.sh _output/images/e2e-storage &&
  bash cluster/load-images.sh _output/images/e2e-storage || { rc=1; exit; }
# shellcheck disable=SC1091
source /var/lib/slimvirt-cluster/cluster.env
export KUBECONFIG
go run ./e2e/storagesuite/cmd/storage-driverdef -csi-endpoint "$KUBELET_DIR/plugins/csi.slimvirt.io/csi.sock" \
  -kubeconfig "$KUBECONFIG" -storage-class slimvirt -o "$out/driver.yaml" || { rc=1; exit; }
cat "$out/driver.yaml"

# Left out, each for a reason given in docs/csi.md ("Kubernetes' storage suite"):
#  - [Disruptive]: the specs restart kubelet over SSH or systemd; the local cluster's kubelet is
#    a process of cluster-up, reached by neither.
#  - "should not mount / map unused volumes": the spec looks for the pod's volumes under the
#    fixed path /var/lib/kubelet; the local cluster's kubelet keeps its root under its state
#    directory (several kubelets on one machine cannot share /var/lib/kubelet).
skip='\[Disruptive\]|should not mount / map unused volumes'
[ "${E2E_STORAGE_SLOW:-1}" = 1 ] || skip="$skip|\[Slow\]"
focus='External.Storage'
[ -z "${E2E_STORAGE_FOCUS:-}" ] || focus="External.Storage.*(${E2E_STORAGE_FOCUS})"
start=$(date +%s)
"$bin/ginkgo" -p --procs="${E2E_STORAGE_PROCS:-4}" --timeout=4h --no-color --output-dir="$out" \
  --junit-report=junit.xml --focus="$focus" --skip="$skip" "$bin/e2e.test" -- \
  -kubeconfig="$KUBECONFIG" -provider=skeleton -storage.testdriver="$PWD/$out/driver.yaml" \
  -report-dir="$PWD/$out" -allowed-not-ready-nodes=0 > "$out/e2e.log" 2>&1 || rc=1
echo "e2e-storage: $(( $(date +%s) - start ))s, log in $out/e2e.log"
grep -E '^Ran [0-9]+ of [0-9]+ Specs|(SUCCESS|FAIL)! -- |^\s*\[FAIL\]' "$out/e2e.log" | sort -u
# The results by test pattern and suite, as docs/csi.md shows them.
[ -f "$out/junit.xml" ] && go run ./e2e/storagesuite/cmd/storage-results "$out/junit.xml" > "$out/results.md" &&
  echo "e2e-storage: results by pattern in $out/results.md"
