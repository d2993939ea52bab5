# The node's storage pool: the slimvirt CSI driver keeps its volumes in $POOL_DIR. By default
# that is an XFS filesystem (reflinks, project quotas) on a sparse image file, loop-mounted
# with prjquota when the kernel has XFS quotas, as on a node whose pool is its own disk: clones share blocks and each
# filesystem volume is held to its size. CLUSTER_POOL_FS=dir keeps a plain directory on the
# host's filesystem instead (no quotas). The image persists with the rest of $STATE_DIR;
# cluster-down unmounts it with every other mount under $STATE_DIR (the loop device goes with
# it). Sourced after lib.sh.

POOL_FS=${CLUSTER_POOL_FS:-xfs}
POOL_DIR=$STATE_DIR/slimvirt/pools
POOL_IMG=$STATE_DIR/pool-xfs.img
POOL_SIZE=${CLUSTER_POOL_SIZE:-64G}

mount_pool() {
  case $POOL_FS in
    dir) mkdir -p "$POOL_DIR"; return 0 ;;
    xfs) ;;
    *) die "CLUSTER_POOL_FS=$POOL_FS: use xfs or dir" ;;
  esac
  mountpoint -q "$POOL_DIR" && return 0
  command -v mkfs.xfs >/dev/null || die "mkfs.xfs is missing (xfsprogs; run: make deps)"
  if [ ! -e "$POOL_IMG" ]; then
    mkdir -p "$POOL_DIR"
    [ -z "$(find "$POOL_DIR" -mindepth 1 ! -type d -print -quit)" ] ||
      die "$POOL_DIR holds volumes of a directory pool; remove them or use CLUSTER_POOL_FS=dir"
    truncate -s "$POOL_SIZE" "$POOL_IMG.tmp"
    mkfs.xfs -q -m reflink=1 "$POOL_IMG.tmp" || die "mkfs.xfs $POOL_IMG failed"
    mv "$POOL_IMG.tmp" "$POOL_IMG"
  fi
  mkdir -p "$POOL_DIR"
  if mount -o loop,prjquota "$POOL_IMG" "$POOL_DIR" 2>/dev/null; then
    step "storage pool: XFS with project quotas on $POOL_IMG ($POOL_SIZE sparse) at $POOL_DIR"
    return 0
  fi
  # A kernel built without CONFIG_XFS_QUOTA refuses prjquota; the driver then reports that the
  # pool holds volumes to their size only for disk.img.
  mount -o loop "$POOL_IMG" "$POOL_DIR" || die "mount the pool image $POOL_IMG at $POOL_DIR failed"
  step "storage pool: XFS on $POOL_IMG ($POOL_SIZE sparse) at $POOL_DIR; this kernel has no XFS project quotas"
}
