#!/usr/bin/env bash
# cluster-up: starts a single-node Kubernetes cluster inside the network namespace
# slimvirt-node. Idempotent: leftovers of an earlier run (also a killed one) are removed first.
# On failure everything this run made is removed again and the failing component's log shown.
set -euo pipefail
T0=$EPOCHREALTIME
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cleanup.sh"
. "$(dirname "$0")/pki.sh"
. "$(dirname "$0")/images.sh"
. "$(dirname "$0")/configs.sh"
. "$(dirname "$0")/pool.sh"

require_root cluster-up
lock_cluster
require_tools
case $CLUSTER_NET in bridge | calico | vpc) ;; *) die "CLUSTER_NET=$CLUSTER_NET: want bridge, calico or vpc" ;; esac

# A running, healthy cluster made by the same harness with the same CLUSTER_NET is left alone
# (so cluster-up can be run again and again); FRESH=1 restarts it from scratch.
fingerprint() {
  local d; d=$(dirname "$0")
  cat "$d"/{lib,cleanup,pki,images,configs,up}.sh "$d"/pause/*.go "$d"/nsforward/*.go | sha256sum | cut -c1-16
  echo "$CLUSTER_NET"
}
healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do [ -n "$(recorded_pid "$c")" ] || return 1; done
  [ "$(cat "$RUN_DIR/fingerprint" 2>/dev/null)" = "$(fingerprint)" ] || return 1
  kctl get --raw /readyz >/dev/null 2>&1 || return 1
  [ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
if [ "${FRESH:-0}" != 1 ] && healthy; then
  step "cluster already up and healthy (CLUSTER_NET=$CLUSTER_NET); FRESH=1 restarts it"
  exit 0
fi

CURRENT=""
DONE=0
# Any failing command ends the script (set -e); the EXIT trap then removes what this run made.
on_exit() {
  local rc=$?
  [ $DONE = 1 ] && return 0
  [ $rc = 0 ] && rc=1
  echo "cluster: cluster-up failed${CURRENT:+ at $CURRENT} (exit $rc)" >&2
  if [ -n "$CURRENT" ] && [ -r "$LOG_DIR/$CURRENT.log" ]; then
    echo "---- last lines of $LOG_DIR/$CURRENT.log" >&2
    tail -n 25 "$LOG_DIR/$CURRENT.log" >&2
    echo "----" >&2
  fi
  echo "cluster: removing what this run made" >&2
  cluster_cleanup 5
  exit "$rc"
}
trap on_exit EXIT
trap 'echo "cluster: interrupted" >&2; exit 130' INT TERM

step "removing leftovers of earlier runs"
cluster_cleanup 3
if ss -Hltn "sport = :$API_PORT" 2>/dev/null | grep -q "127.0.0.1:$API_PORT"; then
  die "127.0.0.1:$API_PORT (the apiserver forwarder's port) is taken by a process that is not ours; stop it first"
fi

step "preparing binaries and images"
ensure_cni_plugins
ensure_pause_image
ensure_metrics_server
ensure_testcni
ensure_nsforward
ensure_registry

mkdir -p "$STATE_DIR" "$RUN_DIR" "$PID_DIR"
chmod 711 "$STATE_DIR"
# Per-run state starts empty; certificates, the CNI binaries and containerd's images persist.
if [ -d "$LOG_DIR" ]; then rm -rf "$LOG_DIR.prev"; mv "$LOG_DIR" "$LOG_DIR.prev"; fi
rm -rf --one-file-system "$STATE_DIR/etcd" "$KUBELET_DIR" "$POD_LOG_DIR" "$STATE_DIR/cni/ipam" "$STATE_DIR/config"
mkdir -p "$LOG_DIR" "$KUBELET_DIR" "$POD_LOG_DIR" "$STATE_DIR/config" "$CNI_CONF_DIR" "$CNI_BIN_DIR"

mount_pool

step "certificates"
make_pki

step "network namespace $NETNS"
# ip netns add makes /var/run/netns a shared bind mount of itself when it is not one yet, so a
# later `ip netns add` by anyone does not stack a new mount over our namespace file. When that
# mount is ours, cluster-down removes it again if no namespace is left in it.
mountpoint -q /var/run/netns || touch "$STATE_DIR/netns-dir-mount.ours"
ip netns add "$NETNS"
in_node ip link set lo up
# An empty bridge stands in for a dummy device (these kernels have no dummy driver): it holds
# the node IP and swallows what is routed to it.
in_node ip link add "$NODE_IF" type bridge
in_node ip addr add "$NODE_IP/32" dev "$NODE_IF"
in_node ip link set "$NODE_IF" up
# A default route lets the node itself reach ClusterIPs (kube-proxy DNATs them in OUTPUT).
in_node ip route add default dev "$NODE_IF"
in_node sysctl -qw net.ipv4.ip_forward=1
make_cgroup system

write_configs

CURRENT=containerd
[ -d /run/containerd ] || touch "$STATE_DIR/run-containerd-dir.ours"
[ -d /var/lib/cni ] || touch "$STATE_DIR/var-lib-cni-dir.ours"
start_component containerd containerd --config "$STATE_DIR/config/containerd.toml"
wait_for "containerd ready" 30 "${CTR[@]}" version
remove_stale_containers
step "sandbox image $SANDBOX_IMAGE $(import_image "$CLUSTER_OUT/pause.tar")"
step "image $METRICS_SERVER_IMAGE $(import_image "$CLUSTER_OUT/metrics-server.tar")"

CURRENT=registry
start_component registry "$CLUSTER_OUT/slimvirt-registry" serve -addr "$REGISTRY_ADDR" -dir "$STATE_DIR/registry"
wait_for "registry serving on the node's $REGISTRY_ADDR" 30 in_node curl -sf -o /dev/null "http://$REGISTRY_ADDR/v2/"

CURRENT=etcd
start_component etcd etcd --name "$NODE_NAME" --data-dir "$STATE_DIR/etcd" \
  --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" \
  --cert-file "$PKI/etcd-server.crt" --key-file "$PKI/etcd-server.key" \
  --client-cert-auth --trusted-ca-file "$PKI/ca.crt" --logger zap --log-level warn
etcd_ok() {
  in_node curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/apiserver-etcd-client.crt" \
    --key "$PKI/apiserver-etcd-client.key" https://127.0.0.1:2379/health
}
wait_for "etcd healthy" 30 etcd_ok

CURRENT=kube-apiserver
start_component kube-apiserver "$K8S_BIN/kube-apiserver" \
  --advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port "$API_PORT" \
  --etcd-servers https://127.0.0.1:2379 --etcd-cafile "$PKI/ca.crt" \
  --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
  --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
  --enable-aggregator-routing=true \
  --allow-privileged=true --profiling=false --v=1
node_api_ready() { in_node "$KUBECTL" --kubeconfig "$PKI/admin-node.kubeconfig" --cache-dir "$STATE_DIR/kubectl-cache" get --raw /readyz; }
wait_for "kube-apiserver ready at https://$NODE_IP:$API_PORT" 90 node_api_ready

CURRENT=apiserver-forward
# The root namespace gets no interface: each connection to 127.0.0.1:6443 is carried into the
# node namespace by a forwarder that dials from a thread switched into that namespace.
start_root_component apiserver-forward "$CLUSTER_OUT/slimvirt-nsforward" \
  -listen "$API_LOCAL" -netns "$NETNS_PATH" -target "$NODE_IP:$API_PORT"
wait_for "apiserver reachable from the root namespace at https://$API_LOCAL" 15 kctl get --raw /readyz

CURRENT=rbac
kctl apply -f "$STATE_DIR/config/rbac.yaml" >/dev/null
step "RBAC for the apiserver's kubelet client applied"

CURRENT=kube-controller-manager
start_component kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$PKI/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 10257 \
  --tls-cert-file "$PKI/controller-manager-serving.crt" --tls-private-key-file "$PKI/controller-manager-serving.key" \
  --client-ca-file "$PKI/ca.crt" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-account-private-key-file "$PKI/sa.key" --use-service-account-credentials \
  --service-cluster-ip-range "$SERVICE_CIDR" --leader-elect=false --profiling=false --v=1 \
  --kube-api-qps 200 --kube-api-burst 400 \
  --flex-volume-plugin-dir "$STATE_DIR/controller-manager/volume-plugins"

CURRENT=kube-scheduler
start_component kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$PKI/scheduler.kubeconfig" \
  --authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
  --authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 10259 \
  --tls-cert-file "$PKI/scheduler-serving.crt" --tls-private-key-file "$PKI/scheduler-serving.key" \
  --leader-elect=false --profiling=false --v=1
step "controller-manager and scheduler started"

CURRENT=kubelet
save_sysctls
# Paths kubelet and containerd use whatever their config says; removed again by the cleanup
# when this run made them.
[ -d /var/log/containers ] || touch "$STATE_DIR/log-containers-dir.ours"
[ -d /var/lib/kubelet ] || touch "$STATE_DIR/var-lib-kubelet-dir.ours"
start_component kubelet "$K8S_BIN/kubelet" --config "$STATE_DIR/config/kubelet.yaml" \
  --kubeconfig "$PKI/kubelet.kubeconfig" --root-dir "$KUBELET_DIR" \
  --volume-plugin-dir "$KUBELET_DIR/volume-plugins" \
  --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v=1

CURRENT=kube-proxy
start_component kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE_DIR/config/kube-proxy.yaml" --v=1
step "kubelet and kube-proxy started"

CURRENT=kubelet
node_ready() {
  [ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_for "node $NODE_NAME Ready" 120 node_ready
CURRENT=kube-proxy
proxy_synced() { in_node curl -sf -m 2 http://127.0.0.1:10256/healthz; }
wait_for "kube-proxy has synced its rules" 60 proxy_synced

write_env
CURRENT=smoke-pod
# The controller-manager makes it too, some seconds later; making it here saves the wait.
for ns in default kube-system; do kctl -n "$ns" create serviceaccount default >/dev/null 2>&1 || true; done
kctl -n kube-system delete pod cluster-up-check --ignore-not-found --wait=false >/dev/null
kctl -n kube-system run cluster-up-check --image "$SANDBOX_IMAGE" --image-pull-policy Never --restart Never >/dev/null
pod_running() { [ "$(kctl -n kube-system get pod cluster-up-check -o jsonpath='{.status.phase}')" = Running ]; }
if ! wait_for "test pod running" 90 pod_running; then
  kctl -n kube-system describe pod cluster-up-check >&2 || true
  false
fi
kctl -n kube-system delete pod cluster-up-check --wait=false >/dev/null
CURRENT=metrics-server
# Resource metrics for `kubectl top` and HorizontalPodAutoscalers; not waited for: it is
# Available some seconds later, and only its users wait.
sed "s|@IMAGE@|$METRICS_SERVER_IMAGE|" "$REPO_ROOT/cluster/addons/metrics-server.yaml" | kctl apply -f - >/dev/null
step "metrics-server applied"
for c in "${COMPONENTS[@]}"; do
  CURRENT=$c
  [ -n "$(recorded_pid "$c")" ] || die "$c exited during cluster-up"
done
fingerprint > "$RUN_DIR/fingerprint"
DONE=1
step "cluster up: KUBECONFIG=$KUBECONFIG_PATH (CLUSTER_NET=$CLUSTER_NET)"
