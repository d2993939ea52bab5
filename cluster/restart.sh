#!/usr/bin/env bash
# cluster-restart COMPONENT: stops one node component of the local cluster (kubelet,
# containerd or kube-proxy) with SIGTERM, as a node's service manager would, and starts it again
# with the command line it ran with. The fault drills use it (make chaos): containers and VMs
# must outlive a restart of the kubelet and of containerd.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
require_root cluster-restart
name=${1:-}
case $name in
  kubelet | containerd | kube-proxy) ;;
  *) die "usage: cluster/restart.sh kubelet|containerd|kube-proxy" ;;
esac
lock_cluster
pid=$(recorded_pid "$name")
[ -n "$pid" ] || die "restart: $name is not running"
mapfile -d '' args <"/proc/$pid/cmdline"
[ ${#args[@]} -gt 0 ] || die "restart: cannot read the command line of $name (pid $pid)"
kill -TERM "$pid"
for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.1; done
if alive "$pid"; then
  echo "cluster: $name (pid $pid) ignored SIGTERM for 30s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
fi
step "$name (pid $pid) stopped"
start_component "$name" "${args[@]}"
case $name in
  kubelet) wait_for "kubelet healthy" 60 in_node curl -sf -m 2 http://127.0.0.1:10248/healthz ;;
  containerd) wait_for "containerd serving" 60 "${CTR[@]}" version ;;
  kube-proxy) wait_for "kube-proxy healthy" 60 in_node curl -sf -m 2 http://127.0.0.1:10256/healthz ;;
esac
step "$name restarted (pid $(recorded_pid "$name"))"
