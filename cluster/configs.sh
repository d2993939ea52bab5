# Configuration files of the cluster's components, written fresh on every cluster-up into
# $STATE_DIR/config (and the CNI conflist into $CNI_CONF_DIR). Sourced after lib.sh.

write_containerd_config() {
  cat > "$STATE_DIR/config/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
oom_score = 0
# Snapshotters and plugins that would touch paths outside our directories or are not needed.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # CAP_SYS_RESOURCE is missing on these machines: a container may not lower oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # A block PVC's device node in a container belongs to the pod's runAsUser/runAsGroup, so the
  # non-root launcher (uid 107) can open it; without this it stays root's.
  device_ownership_from_security_context = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        # runc's state, by default in containerd's fixed /run/containerd/runc.
        Root = "$RUN_DIR/runc"
  # docker.io resolves to the cluster's registry first (cluster/registry): the images the
  # user guide names are pushed there, since no registry is reachable from these machines.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE_DIR/config/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
}

write_registry_hosts() {
  mkdir -p "$STATE_DIR/config/certs.d/docker.io"
  cat > "$STATE_DIR/config/certs.d/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."http://$REGISTRY_ADDR"]
  capabilities = ["pull", "resolve"]
EOF
}

write_kubelet_config() {
  cat > "$STATE_DIR/config/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
podLogsDir: $POD_LOG_DIR
clusterDomain: cluster.local
resolvConf: ""
registerNode: true
serializeImagePulls: false
# Images cannot be pulled again (no registry): never garbage-collect them, and do not evict
# pods on a busy shared disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
maxPods: 110
EOF
}

write_kube_proxy_config() {
  cat > "$STATE_DIR/config/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $PKI/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Masquerading every Service connection makes pod -> Service -> pod on the same bridge work
# without br_netfilter (a module the root namespace would have to load).
iptables:
  masqueradeAll: true
# Zero leaves the kernel's conntrack settings alone (some are global, not per namespace).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# RBAC the bootstrap policy does not cover: the apiserver's client cert may use the kubelet API
# (logs, exec, port-forward), as kubeadm grants it.
write_rbac() {
  cat > "$STATE_DIR/config/rbac.yaml" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: slimvirt:kube-apiserver-kubelet-client
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kubelet-api-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: kube-apiserver-kubelet-client
EOF
}

# write_conflist writes 10-cluster.conflist atomically (containerd watches the directory and
# must never read half a file; the temporary name has no extension it would load).
# EXTRA_PLUGINS (JSON objects, comma-separated) are appended to the chain.
write_conflist() {
  local first
  case $CLUSTER_NET in
    bridge)
      first='{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "'$POD_CIDR'", "gateway": "'$POD_GATEWAY'"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "'$STATE_DIR'/cni/ipam"
      }
    }' ;;
    calico | vpc)
      first='{
      "type": "slimvirt-testcni",
      "mode": "'$CLUSTER_NET'",
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "'$POD_CIDR'"}]],
        "dataDir": "'$STATE_DIR'/cni/ipam"
      }
    }' ;;
  esac
  rm -f "$CNI_CONF_DIR"/*.conf "$CNI_CONF_DIR"/*.conflist "$CNI_CONF_DIR"/*.json
  cat > "$CNI_CONF_DIR/.10-cluster.tmp" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    $first,
    {"type": "portmap", "capabilities": {"portMappings": true}}${EXTRA_PLUGINS:+,
    $EXTRA_PLUGINS}
  ]
}
EOF
  mv "$CNI_CONF_DIR/.10-cluster.tmp" "$CNI_CONFLIST"
}

write_configs() {
  write_containerd_config
  write_registry_hosts
  write_kubelet_config
  write_kube_proxy_config
  write_rbac
  write_conflist
}

# write_env records the facts other parts of slimvirt read (shell KEY=VALUE).
write_env() {
  cat > "$STATE_DIR/cluster.env.tmp" <<EOF
STATE_DIR=$STATE_DIR
RUN_DIR=$RUN_DIR
NETNS=$NETNS
NETNS_PATH=$NETNS_PATH
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
KUBECONFIG=$KUBECONFIG_PATH
KUBECTL=$KUBECTL
API_SERVER=https://$API_LOCAL
KUBELET_DIR=$KUBELET_DIR
CONTAINERD_SOCK=$CONTAINERD_SOCK
CNI_CONF_DIR=$CNI_CONF_DIR
CNI_BIN_DIR=$CNI_BIN_DIR
CNI_CONFLIST=$CNI_CONFLIST
POD_CIDR=$POD_CIDR
SERVICE_CIDR=$SERVICE_CIDR
CLUSTER_NET=$CLUSTER_NET
SANDBOX_IMAGE=$SANDBOX_IMAGE
CGROUP_ROOT=/$CGROUP_ROOT
EOF
  mv "$STATE_DIR/cluster.env.tmp" "$STATE_DIR/cluster.env"
}
