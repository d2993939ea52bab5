# cluster_cleanup removes everything a cluster run made, whether that run ended with
# cluster-down or was killed: our processes (by recorded PID, then by our cgroup tree, then
# containerd shims that name our socket), the pod network namespaces (named in our containerd's
# metadata, or with a veth peer in the node namespace), every mount under our directories, the
# node namespace with its interfaces, our cgroups, and the kernel settings kubelet changed.
# Sourced after lib.sh; safe to run when nothing is there.

# stop_components sends SIGTERM to the given recorded components, waits up to GRACE seconds, then
# SIGKILLs what is left.
stop_components() {
  local grace=$1 pids=() c pid end any; shift
  for c in "$@"; do
    pid=$(recorded_pid "$c")
    [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); }
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  end=$(( $(date +%s) + grace ))
  while [ "$(date +%s)" -lt "$end" ]; do
    any=0
    for pid in "${pids[@]}"; do alive "$pid" && any=1; done
    [ $any = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    alive "$pid" || continue
    echo "cluster: $(cat "/proc/$pid/comm" 2>/dev/null) (pid $pid) ignored SIGTERM for ${grace}s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# stop_recorded stops the clients of etcd and containerd first (the apiserver waits for its
# requests to drain, which never happens once etcd is gone), then etcd and containerd.
stop_recorded() {
  local grace=$1
  stop_components "$grace" kube-proxy kubelet kube-scheduler kube-controller-manager apiserver-forward kube-apiserver
  stop_components "$grace" etcd containerd
  rm -f "$PID_DIR"/*.pid
}

# cgroup_pids lists every PID in our cgroup tree, in any hierarchy.
cgroup_pids() {
  local h
  for h in $(cgroup_hierarchies); do
    [ -d "$h/$CGROUP_ROOT" ] || continue
    find "$h/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# shim_pids lists containerd shims started for our containerd (they name its socket).
shim_pids() {
  local pid
  for pid in $(grep -lsaF -- "$CONTAINERD_SOCK" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
    case $(cat "/proc/$pid/comm" 2>/dev/null) in containerd-shim*) echo "$pid" ;; esac
  done
}

kill_leftovers() {
  local round pids
  for round in 1 2 3 4 5 6 7 8 9 10; do
    pids=$( { cgroup_pids; shim_pids; } | { grep -vx "$$" || true; } | sort -un)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  echo "cluster: processes still in our cgroups after 10 rounds: $pids" >&2
}

# pod_netns lists the network namespaces containerd made for our pods: those named in our
# containerd's metadata (a sandbox caught between CNI teardown and namespace removal has no
# interface left to tell), and those whose veth peer lives in the node namespace. A list
# written by an interrupted cleanup is honoured too.
pod_netns() {
  local ns db=$CONTAINERD_ROOT/io.containerd.metadata.v1.bolt/meta.db
  if [ -r "$db" ]; then
    for ns in $(grep -aoE '/var/run/netns/cni-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$db" | sort -u); do
      [ -e "$ns" ] && echo "${ns##*/}"
    done
  fi
  if [ -e "$NETNS_PATH" ]; then
    for ns in $(ls /var/run/netns 2>/dev/null); do
      [ "$ns" = "$NETNS" ] && continue
      ip -n "$ns" -o link show 2>/dev/null | grep -q "link-netns $NETNS\b" && echo "$ns"
    done
  fi
  [ -r "$RUN_DIR/pod-netns.list" ] && cat "$RUN_DIR/pod-netns.list"
  return 0
}

# our_mounts lists mount points under our directories and our netns files, deepest first.
our_mounts() {
  awk '{print $5}' /proc/self/mountinfo | sed 's/\\040/ /g' |
    grep -E "^($STATE_DIR|$RUN_DIR)(/|$)" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}

remove_netns() {
  local ns=$1 path=/var/run/netns/$1
  [ -e "$path" ] || return 0
  umount -l "$path" 2>/dev/null || true
  rm -f "$path" 2>/dev/null || true
}

remove_cgroups() {
  local h
  for h in $(cgroup_hierarchies); do
    [ -d "$h/$CGROUP_ROOT" ] || continue
    find "$h/$CGROUP_ROOT" -depth -type d -delete 2>/dev/null || true
    [ -d "$h/$CGROUP_ROOT" ] && echo "cluster: could not remove cgroup $h/$CGROUP_ROOT" >&2
  done
  return 0
}

# Kernel settings kubelet rewrites at start (it has no "leave alone" mode); saved by
# save_sysctls before kubelet's first start and put back here.
KUBELET_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
save_sysctls() {
  local f=$STATE_DIR/sysctl.saved s
  [ -e "$f" ] && return 0
  for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s $(cat "/proc/sys/$s")"; done > "$f.tmp"
  mv "$f.tmp" "$f"
}
restore_sysctls() {
  local f=$STATE_DIR/sysctl.saved s v
  [ -r "$f" ] || return 0
  while read -r s v; do
    [ "$(cat "/proc/sys/$s")" = "$v" ] || echo "$v" > "/proc/sys/$s"
  done < "$f"
  rm -f "$f"
}

# remove_shim_sockets deletes the sockets our containerd's shims left in containerd's fixed
# /run/containerd/s (each task's bundle names its shim's address).
remove_shim_sockets() {
  local f a
  for f in "$CONTAINERD_STATE"/io.containerd.runtime.v2.task/*/*/address; do
    [ -r "$f" ] || continue
    a=$(cat "$f"); a=${a#unix://}
    case $a in /run/containerd/s/*) rm -f "$a" ;; esac
  done
}

# remove_fixed_path_leftovers removes what kubelet, containerd and its CNI library leave in
# fixed paths outside our directories: the device-plugin socket (kubelet always serves it in
# /var/lib/kubelet/device-plugins), the shim socket dir (/run/containerd/s), and the CNI result
# cache (/var/lib/cni/results, one file per sandbox and network). A directory goes only when a
# marker says this cluster made it; a result file only when its sandbox ID is in our
# containerd's metadata or it names our network.
remove_fixed_path_leftovers() {
  local db=$CONTAINERD_ROOT/io.containerd.metadata.v1.bolt/meta.db f id
  local -A ours=()
  if [ -e "$STATE_DIR/var-lib-kubelet-dir.ours" ]; then
    # The directory is ours, so are the sockets in it (kubelet's and our pods' device plugins).
    find /var/lib/kubelet/device-plugins -maxdepth 1 -type s -delete 2>/dev/null || true
    # The kubelet's record of device plugin allocations (written once a plugin registers).
    rm -f /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
    rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
    rm -f "$STATE_DIR/var-lib-kubelet-dir.ours"
  fi
  if [ -e "$STATE_DIR/run-containerd-dir.ours" ]; then
    rmdir /run/containerd/s /run/containerd 2>/dev/null || true
    rm -f "$STATE_DIR/run-containerd-dir.ours"
  fi
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
  if [ -r "$db" ] && [ -d /var/lib/cni/results ]; then
    for id in $(grep -aoE '[0-9a-f]{64}' "$db" | sort -u); do ours[$id]=1; done
    for f in /var/lib/cni/results/cni-loopback-*-lo; do
      [ -e "$f" ] || continue
      id=${f#/var/lib/cni/results/cni-loopback-}; id=${id%-lo}
      [ -n "${ours[$id]:-}" ] && rm -f "$f"
    done
  fi
  if [ -e "$STATE_DIR/var-lib-cni-dir.ours" ]; then
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
    rm -f "$STATE_DIR/var-lib-cni-dir.ours"
  fi
  return 0
}

# dstep prints cleanup progress when CLUSTER_DEBUG=1.
dstep() { [ "${CLUSTER_DEBUG:-0}" = 1 ] && step "cleanup: $*"; return 0; }

cluster_cleanup() {
  local grace=${1:-10} ns m
  stop_recorded "$grace"
  dstep "components stopped"
  kill_leftovers
  dstep "leftover processes killed"
  mkdir -p "$RUN_DIR"
  pod_netns | sort -u > "$RUN_DIR/pod-netns.list.tmp"
  mv "$RUN_DIR/pod-netns.list.tmp" "$RUN_DIR/pod-netns.list"
  while read -r ns; do remove_netns "$ns"; done < "$RUN_DIR/pod-netns.list"
  dstep "pod namespaces removed"
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(our_mounts)
  dstep "mounts removed"
  remove_netns "$NETNS"
  dstep "node namespace removed"
  [ -e "$NETNS_PATH" ] && echo "cluster: cannot remove $NETNS_PATH (a mount stacked over it?)" >&2
  rm -f "$RUN_DIR/pod-netns.list"
  # Plain umount (not lazy) fails while any namespace is still mounted in the directory.
  if [ -e "$STATE_DIR/netns-dir-mount.ours" ]; then
    if [ -z "$(ls -A /var/run/netns 2>/dev/null)" ] && mountpoint -q /var/run/netns; then
      umount /var/run/netns 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/netns-dir-mount.ours"
  fi
  remove_shim_sockets
  dstep "remove_shim_sockets done"
  remove_cgroups
  dstep "remove_cgroups done"
  restore_sysctls
  dstep "restore_sysctls done"
  # kubelet links every container log into /var/log/containers (a fixed path); drop ours.
  if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$POD_LOG_DIR/*" -delete 2>/dev/null || true
    [ -e "$STATE_DIR/log-containers-dir.ours" ] && { rmdir /var/log/containers 2>/dev/null || true; }
  fi
  rm -f "$STATE_DIR/log-containers-dir.ours"
  remove_fixed_path_leftovers
  # cluster.env exists only while a cluster is up (other parts test for it).
  rm -f "$STATE_DIR/cluster.env"
  rm -rf "$RUN_DIR"
}
