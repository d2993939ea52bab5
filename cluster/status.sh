#!/usr/bin/env bash
# cluster-status: the local cluster's processes (PID, RSS, health) and its nodes and pods.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
require_root cluster-status
[ -e "$NETNS_PATH" ] || { echo "cluster: not running (no $NETNS_PATH)"; exit 1; }
health_url() {
  case $1 in
    etcd) echo "https://127.0.0.1:2379/health" ;;
    kube-apiserver) echo "https://$NODE_IP:$API_PORT/readyz" ;;
    kube-controller-manager) echo "https://127.0.0.1:10257/healthz" ;;
    kube-scheduler) echo "https://127.0.0.1:10259/healthz" ;;
    kubelet) echo "http://127.0.0.1:10248/healthz" ;;
    kube-proxy) echo "http://127.0.0.1:10256/healthz" ;;
  esac
}
net=$(sed -n 's/^CLUSTER_NET=//p' "$STATE_DIR/cluster.env" 2>/dev/null)
echo "cluster: netns $NETNS, node IP $NODE_IP, CLUSTER_NET=${net:-?}, KUBECONFIG=$KUBECONFIG_PATH"
down=0 total=0
printf '%-24s %8s %9s  %s\n' COMPONENT PID RSS_MIB HEALTH
for c in "${COMPONENTS[@]}"; do
  pid=$(recorded_pid "$c")
  if [ -z "$pid" ]; then printf '%-24s %8s %9s  %s\n' "$c" - - "not running"; down=1; continue; fi
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  total=$((total + rss))
  url=$(health_url "$c") health=running
  case $c in
    containerd) "${CTR[@]}" version >/dev/null 2>&1 && health=ok || health=unreachable ;;
    registry) in_node curl -sf -m 3 -o /dev/null "http://$REGISTRY_ADDR/v2/" && health=ok || health=unreachable ;;
    apiserver-forward) kctl get --raw /readyz >/dev/null 2>&1 && health=ok || health=unreachable ;;
    *)
      # Health endpoints of the control plane accept the admin client certificate.
      out=$(in_node curl -s -m 3 --cacert "$PKI/ca.crt" -k --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$url" 2>/dev/null)
      [ "$out" = ok ] && health=ok || health="unhealthy: ${out:0:60}"
      [ "$c" = kube-proxy ] && [[ $out == *lastUpdated* ]] && health=ok
      [ "$c" = etcd ] && [[ $out == *\"true\"* ]] && health=ok ;;
  esac
  [ "$health" = ok ] || down=1
  printf '%-24s %8s %9s  %s\n' "$c" "$pid" "$((rss / 1024))" "$health"
done
printf '%-24s %8s %9s\n' total "" "$((total / 1024))"
echo
kctl get nodes,pods -A -o wide
exit $down
