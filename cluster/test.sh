#!/usr/bin/env bash
# test-cluster: brings the local cluster up from an empty state dir (cold) and again (warm),
# runs pods, checks logs, exec, port-forward, the apiserver from a pod (Service and node IP),
# ClusterIP Services (also hairpin), the pod network's gateway in calico/vpc mode, a plugin
# appended to the conflist at runtime, Bidirectional mount propagation, then brings the cluster
# down and checks that the root namespace's links, namespaces, mounts, processes, cgroups and
# the fixed paths kubelet/containerd use are as before. Prints the measured figures.
# CLUSTER_NET=bridge|calico|vpc picks the pod network; KEEP_STATE=1 skips the cold start.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_root test-cluster
# kubectl keeps its discovery cache with the cluster, not in ~/.kube.
export KUBECACHEDIR=$STATE_DIR/kubectl-cache
cd "$REPO_ROOT"

FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
# check DESC CMD...: runs CMD, passes when it succeeds.
check() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# snapshot prints what of the machine could be ours: root-namespace links, netns, mounts,
# processes naming our dirs, our cgroups, and the fixed paths the components use.
snapshot() {
  echo "## links"; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "## netns"; ls /var/run/netns 2>/dev/null | sort
  echo "## mounts"; awk '{print $5}' /proc/self/mountinfo | sort
  echo "## processes"
  local p
  for p in $(grep -lsaE -- "$STATE_DIR|$RUN_DIR|$NETNS_PATH" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    [ "$p" = $$ ] && continue
    case $(cat "/proc/$p/comm" 2>/dev/null) in grep | bash | "") continue ;; esac
    echo "pid $p $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-100)"
  done
  echo "## cgroups"; ls -d /sys/fs/cgroup/*/"$CGROUP_ROOT" 2>/dev/null || true
  # Paths kubelet, containerd and libcni use whatever they are told.
  echo "## fixed paths"
  ls -d /var/lib/kubelet /var/lib/kubelet/device-plugins/kubelet.sock /run/containerd /run/containerd/runc \
    /var/lib/cni /var/lib/cni/results/* /var/log/containers /var/log/pods /usr/libexec/kubernetes \
    /etc/kubernetes /etc/cni /opt/cni /opt/containerd /var/lib/containerd 2>/dev/null || true
}

bash cluster/down.sh >/dev/null
snapshot > /tmp/slimvirt-cluster-before.txt
# Whatever happens, the test leaves no cluster behind (KEEP_CLUSTER=1 keeps it for debugging).
finish() {
  local rc=$?
  if [ "${KEEP_CLUSTER:-0}" != 1 ] && [ -e "$NETNS_PATH" ]; then bash cluster/down.sh >/dev/null 2>&1 || true; fi
  [ $rc = 0 ] || echo "test-cluster: failed (exit $rc); component logs in $LOG_DIR"
}
trap finish EXIT

if [ "${KEEP_STATE:-0}" != 1 ]; then
  echo "== cold cluster-up (empty $STATE_DIR, pause image rebuilt)"
  rm -rf --one-file-system "$STATE_DIR" "$CLUSTER_OUT/pause.tar"
  t=$EPOCHREALTIME
  bash cluster/up.sh
  COLD=$(secs "$t" "$EPOCHREALTIME")
  t=$EPOCHREALTIME
  bash cluster/down.sh
  DOWN_EMPTY=$(secs "$t" "$EPOCHREALTIME")
fi

echo "== warm cluster-up"
t=$EPOCHREALTIME
bash cluster/up.sh
WARM=$(secs "$t" "$EPOCHREALTIME")
t=$EPOCHREALTIME
check "cluster-up again leaves the healthy cluster alone" bash -c "bash cluster/up.sh | grep -q 'already up'"
AGAIN=$(secs "$t" "$EPOCHREALTIME")

check "cluster.env has the fixed facts" grep -qx "KUBECONFIG=$KUBECONFIG_PATH" "$STATE_DIR/cluster.env"
check "kubeconfig target prints the admin kubeconfig" test "$(make -s --no-print-directory kubeconfig)" = "$KUBECONFIG_PATH"
check "the root namespace has no new links" diff <(sed -n '/## links/,/## netns/p' /tmp/slimvirt-cluster-before.txt) <(snapshot | sed -n '/## links/,/## netns/p')

# A throwaway busybox image for the checks.
img=$CLUSTER_OUT/clustertest
rm -rf "$img.root" && mkdir -p "$img.root/bin" "$img.root/tmp"
cp "$(command -v busybox)" "$img.root/bin/busybox"
for a in sh cat echo wget nc sleep httpd mkdir ip timeout; do ln -s busybox "$img.root/bin/$a"; done
go run ./images/cmd/imagebuild -rootfs "$img.root" -tag slimvirt.io/clustertest:dev -o "$img.tar"
rm -rf "$img.root"
echo "image import: $(bash cluster/load-images.sh "$img.tar" | tail -1)"
check "a second load skips the unchanged image" bash -c "bash cluster/load-images.sh '$img.tar' | grep -q skipped"

kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  containers:
  - name: web
    image: slimvirt.io/clustertest:dev
    imagePullPolicy: Never
    command: [sh, -c, 'echo hello-from-web; mkdir -p /www; echo served-by-web > /www/index.html; exec httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: slimvirt.io/clustertest:dev
    imagePullPolicy: Never
    command: [sleep, "3600"]
EOF
t=$EPOCHREALTIME
check "pods web and client become Ready" kctl -n default wait --for=condition=Ready pod/web pod/client --timeout=60s
echo "pods Ready after $(secs "$t" "$EPOCHREALTIME")s"

check "kubectl logs shows the pod's output" bash -c "'$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' -n default logs web | grep -qx hello-from-web"
check "kubectl exec runs in the pod" test "$(kctl -n default exec client -- cat /proc/1/cmdline | tr '\0' ' ')" = "sleep 3600 "
svc_ip=$(kctl -n default get svc web -o jsonpath='{.spec.clusterIP}')
web_ip=$(kctl -n default get pod web -o jsonpath='{.status.podIP}')
pf_ok() {
  local pid out
  "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" -n default port-forward pod/web 18080:8080 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    out=$(curl -s -m 2 http://127.0.0.1:18080/ || true)
    [ "$out" = served-by-web ] && break
    sleep 0.2
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ "$out" = served-by-web ]
}
check "kubectl port-forward reaches the pod from the root namespace" pf_ok
check "pod -> pod IP" test "$(kctl -n default exec client -- timeout 5 wget -qO- "http://$web_ip:8080/")" = served-by-web
svc_ok() { [ "$(kctl -n default exec client -- timeout 5 wget -qO- "http://$svc_ip/")" = served-by-web ]; }
# kube-proxy writes the Service's rules a moment after the endpoints appear.
wait_svc() { local i; for i in $(seq 1 50); do svc_ok && return 0; sleep 0.2; done; return 1; }
check "pod -> ClusterIP Service $svc_ip -> pod on the same node" wait_svc
check "pod -> its own Service -> itself (hairpin)" test "$(kctl -n default exec web -- timeout 5 wget -qO- "http://$svc_ip/" || true)" = served-by-web
# The apiserver answers plain HTTP on its TLS port with "400 Bad Request": proof it was reached.
api_reached() {
  local out
  out=$(kctl -n default exec client -- timeout 5 wget -qO- "http://$1/" 2>&1 || true)
  grep -q '400 Bad Request' <<<"$out"
}
check "pod -> apiserver through the kubernetes Service" api_reached "$KUBERNETES_SERVICE_IP:443"
check "pod -> apiserver at the node IP" api_reached "$NODE_IP:$API_PORT"
check "pod's service account token works against the apiserver" \
  bash -c "'$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' -n default exec client -- cat /var/run/secrets/kubernetes.io/serviceaccount/token | grep -q '^ey'"
check "the aggregation layer is configured (front-proxy CA published)" \
  bash -c "'$KUBECTL' --kubeconfig '$KUBECONFIG_PATH' -n kube-system get configmap extension-apiserver-authentication -o jsonpath='{.data.requestheader-client-ca-file}' | grep -q 'BEGIN CERTIFICATE'"
check "cluster-status reports every component healthy" bash -c "bash cluster/status.sh >/tmp/slimvirt-cluster-status.txt"
cat /tmp/slimvirt-cluster-status.txt | sed -n '1,10p'
case $CLUSTER_NET in
  calico | vpc)
    gw=$(kctl -n default exec client -- ip route show default || true)
    check "pod default route is via 169.254.1.1 ($gw)" grep -q 'default via 169.254.1.1 dev eth0' <<<"$gw"
    neigh=$(kctl -n default exec client -- ip neigh show 169.254.1.1 || true)
    # The node-side veths: proxy ARP on in calico mode, off in vpc mode.
    parp=$(in_node sh -c 'for f in /proc/sys/net/ipv4/conf/cali*/proxy_arp /proc/sys/net/ipv4/conf/eni*/proxy_arp; do [ -e "$f" ] && cat "$f"; done; true' | sort -u | paste -sd,)
    if [ "$CLUSTER_NET" = vpc ]; then
      check "vpc: 169.254.1.1 is a PERMANENT neighbour ($neigh)" grep -q PERMANENT <<<"$neigh"
      check "vpc: node-side veths have proxy_arp=0 ($parp)" test "$parp" = 0
    else
      check "calico: 169.254.1.1 is not pinned ($neigh)" bash -c "! grep -q PERMANENT <<<'$neigh'"
      check "calico: node-side veths have proxy_arp=1 ($parp)" test "$parp" = 1
    fi ;;
esac

# containerd must pick up a plugin appended to the conflist while it runs (the node agent does
# that) and hand it the pod's annotations when the plugin asks for them.
rec=$STATE_DIR/cni-record.jsonl
rm -f "$rec"
EXTRA_PLUGINS='{"type": "slimvirt-testcni", "mode": "record", "file": "'$rec'", "capabilities": {"io.kubernetes.cri.pod-annotations": true}}' \
  bash -c ". cluster/lib.sh; . cluster/configs.sh; write_conflist"
sleep 1
kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: annotated, namespace: default, annotations: {slimvirt.io/cluster-test: chained-plugin-saw-me}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: slimvirt.io/clustertest:dev, imagePullPolicy: Never, command: [sleep, "3600"]}]
EOF
check "a pod starts with a plugin appended to the conflist" kctl -n default wait --for=condition=Ready pod/annotated --timeout=60s
check "the appended plugin ran and got the pod's annotations" grep -q 'chained-plugin-saw-me' "$rec"
bash -c ". cluster/lib.sh; . cluster/configs.sh; write_conflist"

# A CSI node plugin mounts into the kubelet dir with Bidirectional propagation; the mount must
# show in the root mount namespace, and cluster-down must remove it.
kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: bidi, namespace: default}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: slimvirt.io/clustertest:dev
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /kubelet/bidi-test && mount -t tmpfs tmpfs /kubelet/bidi-test && sleep 3600']
    securityContext: {privileged: true}
    volumeMounts: [{name: k, mountPath: /kubelet, mountPropagation: Bidirectional}]
  volumes: [{name: k, hostPath: {path: $KUBELET_DIR}}]
EOF
bidi_seen() { grep -q " $KUBELET_DIR/bidi-test " /proc/self/mountinfo; }
check "a Bidirectional mount made in a pod shows in the root mount namespace" wait_for "bidi mount" 60 bidi_seen

pod_ns=$(bash -c ". cluster/lib.sh; . cluster/cleanup.sh; pod_netns" | sort -u)
check "the pods' network namespaces are found by the cleanup ($(wc -w <<<"$pod_ns"))" test "$(wc -w <<<"$pod_ns")" -ge 3

CP_RSS=$(awk '$1=="total" {print $2}' /tmp/slimvirt-cluster-status.txt)
CP_CGROUP=$(( $(cat "/sys/fs/cgroup/memory/$CGROUP_ROOT/system/memory.usage_in_bytes" 2>/dev/null || echo 0) / 1048576 ))

NPODS=$(kctl get pods -A --no-headers 2>/dev/null | wc -l)
t=$EPOCHREALTIME
bash cluster/down.sh
DOWN=$(secs "$t" "$EPOCHREALTIME")
snapshot > /tmp/slimvirt-cluster-after.txt
# Other builds share this machine: a difference fails the test only when it is ours.
ours_re="^[<>] ($NETNS|${pod_ns//$'\n'/|}|cni0|node0|veth.*|cali.*|eni.*|pid .*|/sys/fs/cgroup/.*|/var/lib/kubelet.*|/run/containerd.*|/var/lib/cni.*|/var/log/containers|/var/log/pods|/usr/libexec/kubernetes|/etc/kubernetes|/etc/cni|/opt/cni|($STATE_DIR|$RUN_DIR|/run/netns/($NETNS|${pod_ns//$'\n'/|}))(/.*)?)$"
if diff /tmp/slimvirt-cluster-before.txt /tmp/slimvirt-cluster-after.txt > /tmp/slimvirt-cluster-diff.txt; then
  pass "root namespace links, netns, mounts, processes, cgroups as before"
elif grep -E "^[<>]" /tmp/slimvirt-cluster-diff.txt | grep -qE "$ours_re"; then
  fail "leftovers after cluster-down:"; grep -E "$ours_re" /tmp/slimvirt-cluster-diff.txt
else
  pass "root namespace as before (changes by others: $(grep -c '^[<>]' /tmp/slimvirt-cluster-diff.txt))"
fi
for n in $pod_ns; do check "pod netns $n removed" test ! -e "/var/run/netns/$n"; done

echo
echo "== figures (CLUSTER_NET=$CLUSTER_NET)"
[ -n "${COLD:-}" ] && echo "cluster-up cold (empty state dir):     ${COLD}s"
[ -n "${COLD:-}" ] && echo "cluster-down right after it:           ${DOWN_EMPTY}s"
echo "cluster-up warm:                       ${WARM}s"
echo "cluster-up on a running cluster:       ${AGAIN}s"
echo "cluster-down ($NPODS pods running):         ${DOWN}s"
echo "control plane RSS (8 processes):       ${CP_RSS} MiB"
echo "control plane memory cgroup usage:     ${CP_CGROUP} MiB (includes page cache)"
echo
[ $FAILS = 0 ] && echo "test-cluster: all checks passed" || { echo "test-cluster: $FAILS checks failed"; exit 1; }
