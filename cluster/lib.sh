# Shared by the local cluster scripts (sourced, not run). Holds the fixed facts other parts of
# slimvirt rely on (written to $STATE_DIR/cluster.env by cluster-up) and the process, mount,
# namespace and cgroup bookkeeping that lets cluster-down and a later cluster-up remove
# everything a run made, also after that run was killed.

STATE_DIR=/var/lib/slimvirt-cluster
RUN_DIR=/run/slimvirt-cluster
NETNS=slimvirt-node
NETNS_PATH=/var/run/netns/$NETNS
NODE_NAME=slimvirt-node
NODE_IP=10.88.0.1
NODE_IF=node0
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
API_PORT=6443
API_LOCAL=127.0.0.1:$API_PORT
KUBECONFIG_PATH=$STATE_DIR/admin.kubeconfig
KUBELET_DIR=$STATE_DIR/kubelet
CNI_CONF_DIR=$STATE_DIR/cni/net.d
CNI_BIN_DIR=$STATE_DIR/cni/bin
CNI_CONFLIST=$CNI_CONF_DIR/10-cluster.conflist
CNI_NETWORK=slimvirt-cluster
CONTAINERD_ROOT=$STATE_DIR/containerd
CONTAINERD_STATE=$RUN_DIR/containerd
CONTAINERD_SOCK=$RUN_DIR/containerd/containerd.sock
PKI=$STATE_DIR/pki
PID_DIR=$RUN_DIR/pids
LOG_DIR=$STATE_DIR/logs
POD_LOG_DIR=$STATE_DIR/pod-logs
# Pods live under $CGROUP_ROOT/kubepods (kubelet cgroupRoot); the control plane and the
# containerd shims live under $CGROUP_ROOT/system, so one tree holds every process we started.
CGROUP_ROOT=slimvirt
SANDBOX_IMAGE=slimvirt.io/pause:dev
CLUSTER_NET=${CLUSTER_NET:-bridge}

SLIMVIRT_CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
K8S_BIN=$SLIMVIRT_CACHE/k8s/$K8S_VERSION/bin
CNI_PLUGINS_VERSION=v1.9.1
CNI_PLUGINS_CACHE=$SLIMVIRT_CACHE/cni-plugins/$CNI_PLUGINS_VERSION
# The image registry on the node namespace's loopback: containerd's mirror for docker.io.
REGISTRY_ADDR=127.0.0.1:5000
METRICS_SERVER_VERSION=v0.8.0
METRICS_SERVER_CACHE=$SLIMVIRT_CACHE/metrics-server/$METRICS_SERVER_VERSION
METRICS_SERVER_IMAGE=slimvirt.io/metrics-server:$METRICS_SERVER_VERSION
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_OUT=$REPO_ROOT/_output/cluster

KUBECTL=$K8S_BIN/kubectl
CTR=(ctr -a "$CONTAINERD_SOCK" -n k8s.io)

# Components in start order; cluster-down stops them in reverse.
COMPONENTS=(containerd registry etcd kube-apiserver apiserver-forward kube-controller-manager kube-scheduler kubelet kube-proxy)

T0=${T0:-$EPOCHREALTIME}
step() { awk -v a="$T0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN { printf "[%6.1fs] %s\n", b - a, m }'; }
die() { echo "cluster: $*" >&2; exit 1; }

require_root() { [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, mounts, cgroups); try: sudo make ${1:-cluster-up}"; }

# lock_cluster serialises cluster-up and cluster-down (an e2e run and a developer, say).
lock_cluster() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  flock -w 600 9 || die "another cluster-up/cluster-down holds $STATE_DIR/.lock"
}

# require_tools fails with one message listing every missing binary.
require_tools() {
  local missing=() t
  for t in go flock ip nsenter openssl containerd containerd-shim-runc-v2 ctr runc etcd iptables conntrack awk curl ss; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}; run: make deps"
  for t in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl; do
    [ -x "$K8S_BIN/$t" ] || missing+=("$K8S_BIN/$t")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}; run: make k8s"
}

# starttime prints a process's start time in clock ticks (field 22 of /proc/PID/stat), which
# together with the PID names one process even after the PID is reused.
starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  set -- $stat
  echo "${20}"
}

# alive is true while a PID exists and is not a zombie (our components are reparented to
# PID 1, which may reap late).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

pid_file() { echo "$PID_DIR/$1.pid"; }

# recorded_pid prints the PID in a component's PID file when that process is still the one
# we started (same start time); nothing otherwise.
recorded_pid() {
  local f pid st
  f=$(pid_file "$1")
  [ -r "$f" ] || return 0
  read -r pid st < "$f" || return 0
  [ -n "$pid" ] && [ -n "$st" ] && [ "$(starttime "$pid" 2>/dev/null)" = "$st" ] && alive "$pid" && echo "$pid"
  return 0
}

cgroup_hierarchies() {
  local d
  for d in /sys/fs/cgroup/*/; do
    d=${d%/}
    [ -e "$d/cgroup.procs" ] && echo "$d"
  done
  [ -e /sys/fs/cgroup/cgroup.procs ] && echo /sys/fs/cgroup
  return 0
}

# make_cgroup creates $CGROUP_ROOT/<sub> in every hierarchy (cpuset needs cpus/mems copied
# down before a process may join).
make_cgroup() {
  local h p c
  for h in $(cgroup_hierarchies); do
    p=$h
    for c in $CGROUP_ROOT ${1:+$CGROUP_ROOT/$1}; do
      mkdir -p "$h/$c"
      if [ -e "$h/$c/cpuset.cpus" ] && [ -z "$(cat "$h/$c/cpuset.cpus")" ]; then
        cat "$p/cpuset.cpus" > "$h/$c/cpuset.cpus"
        cat "$p/cpuset.mems" > "$h/$c/cpuset.mems"
      fi
      p=$h/$c
    done
  done
}

# join_cgroup moves a PID into $CGROUP_ROOT/system in every hierarchy.
join_cgroup() {
  local h
  for h in $(cgroup_hierarchies); do
    [ -d "$h/$CGROUP_ROOT/system" ] && echo "$1" > "$h/$CGROUP_ROOT/system/cgroup.procs" 2>/dev/null || true
  done
}

# record_pid writes "PID STARTTIME" (STARTTIME is empty when the process is already gone,
# which recorded_pid reads as not running).
record_pid() {
  sleep 0.05
  echo "$2 $(starttime "$2" 2>/dev/null)" > "$(pid_file "$1")"
}

# start_component runs a command inside the node netns as a session leader (it outlives make),
# in our cgroup, logging to $LOG_DIR/<name>.log, and records "PID STARTTIME".
start_component() {
  local name=$1; shift
  mkdir -p "$PID_DIR" "$LOG_DIR"
  (
    join_cgroup "$BASHPID"
    exec 9>&- # the cluster lock stays with the script
    exec setsid nsenter --net="$NETNS_PATH" -- "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1
  ) &
  record_pid "$name" $!
}

# start_root_component is start_component in the root netns (the apiserver forwarder).
start_root_component() {
  local name=$1; shift
  mkdir -p "$PID_DIR" "$LOG_DIR"
  (
    join_cgroup "$BASHPID"
    exec 9>&- # the cluster lock stays with the script
    exec setsid "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1
  ) &
  record_pid "$name" $!
}

# wait_for runs a check until it passes or the timeout (seconds) runs out.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local end=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { echo "cluster: timed out after ${timeout}s waiting for: $what" >&2; return 1; }
    # Stop waiting as soon as the component we wait for has exited.
    if [ -n "${CURRENT:-}" ] && [ -e "$(pid_file "$CURRENT")" ] && [ -z "$(recorded_pid "$CURRENT")" ]; then
      echo "cluster: $CURRENT exited while waiting for: $what" >&2
      return 1
    fi
    sleep 0.2
  done
  step "$what"
}

in_node() { nsenter --net="$NETNS_PATH" -- "$@"; }

kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" --cache-dir "$STATE_DIR/kubectl-cache" "$@"; }
