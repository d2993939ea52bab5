#!/usr/bin/env bash
# Runs a Go package's tests as root in a QEMU (TCG) guest booted from the test guest's Debian
# kernel, for what the host kernel cannot do (project quotas: no CONFIG_XFS_QUOTA or
# CONFIG_QFMT_V2 here). docs/testing-guest-kernel.md describes it.
#   run.sh [-tags TAGS] PKG [test flags: -run X, -count 1, -test.* ...]
# Exits with the test binary's exit code; 124 on timeout, 125 when the guest said nothing.
# Environment: SLIMVIRT_CACHE (/var/cache/slimvirt), GUESTKERNEL_TIMEOUT (seconds, 600),
# GUESTKERNEL_MEM (MiB, 768), GUESTKERNEL_SMP (2), GUESTKERNEL_OUT (cache of the unchanging
# initramfs part and the unpacked kernel; _output/guestkernel).
set -euo pipefail
usage() { echo "usage: run.sh [-tags TAGS] PKG [test flags...]" >&2; exit 2; }
tags=
while [ $# -gt 0 ]; do
  case $1 in
    -tags) [ $# -ge 2 ] || usage; tags=$2; shift 2 ;;
    -tags=*) tags=${1#-tags=}; shift ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
pkg=$1; shift

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
kdir=$(cd "${SLIMVIRT_CACHE:-/var/cache/slimvirt}/guest/kernel/current" && pwd -P) ||
  { echo "run.sh: no guest kernel in the cache; make test-guest-kernel fetches it" >&2; exit 2; }
ver=$(basename "$kdir")
out=${GUESTKERNEL_OUT:-$repo/_output/guestkernel}
mkdir -p "$out"

# Modules the initramfs carries, with their dependencies: loop devices, the two filesystems,
# the quota format ext4's hidden quota files use, and the CRC32C both want from the crypto API.
modules="loop xfs ext4 quota_v2 crc32c_generic crc32c_intel"
# Host programs the tests run, with the shared libraries ldd names.
programs="/usr/sbin/mkfs.xfs /usr/sbin/mkfs.ext4 /usr/sbin/xfs_quota /usr/sbin/xfs_io"

tmp=$(mktemp -d)
qpid=
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The unpacked kernel boots through PVH, skipping the in-guest decompression (see
# images/guest/extract-vmlinux.sh).
if [ ! -s "$out/vmlinux-$ver" ]; then
  bash "$repo/images/guest/extract-vmlinux.sh" "$kdir/vmlinuz" "$out/vmlinux-$ver"
fi

# module_closure NAMES...: the module files (paths under lib/modules/VER) for NAMES and what
# they depend on, from modules.dep (the walk images/guest/build-initrd.sh does).
module_closure() {
  local dep=$kdir/lib/modules/$ver/modules.dep n path m d
  local -A seen=()
  local queue=()
  for n in "$@"; do
    path=$(awk -v n="$n" -F: '{f=$1; sub(/.*\//, "", f); sub(/\.ko$/, "", f); gsub(/-/, "_", f); if (f == n) {print $1; exit}}' "$dep")
    [ -n "$path" ] || { echo "run.sh: module $n not in $dep" >&2; return 1; }
    queue+=("$path")
  done
  while [ ${#queue[@]} -gt 0 ]; do
    m=${queue[0]}; queue=("${queue[@]:1}")
    [ -n "${seen[$m]:-}" ] && continue
    seen[$m]=1
    echo "$m"
    for d in $(awk -v m="$m:" '$1 == m {for (i = 2; i <= NF; i++) print $i}' "$dep"); do
      queue+=("$d")
    done
  done
}

# libraries PROGRAMS...: the shared objects ldd resolves for PROGRAMS, and the loader.
libraries() {
  ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u
}

# The base archive: busybox, modules, programs and init. It changes only with this script,
# the kernel or the host's programs, so it is cached under a key of all three.
libs=$(libraries $programs)
key=$( { sha256sum "$0" "$here/init"; echo "$ver $modules"; stat -L -c '%n %s %Y' /bin/busybox $programs $libs; } | sha256sum | cut -c1-16)
base=$out/base-$key.cpio.gz
if [ ! -s "$base" ]; then
  root=$tmp/base
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,mnt}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf /bin/busybox "$root/bin/$applet"
  done
  ln -sf ../bin/busybox "$root/sbin/modprobe"
  # Under the paths ldd names (/lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu/...).
  for f in $programs $libs /etc/mke2fs.conf; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
  done
  mods=$kdir/lib/modules/$ver
  for m in $(module_closure $modules); do
    mkdir -p "$root/lib/modules/$ver/$(dirname "$m")"
    cp "$mods/$m" "$root/lib/modules/$ver/$m"
  done
  cp "$mods/modules.builtin" "$mods/modules.order" "$root/lib/modules/$ver/"
  busybox depmod -b "$root" "$ver"
  echo "$modules" >"$root/etc/guestkernel-modules"
  install -m 0755 "$here/init" "$root/init"
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc -R 0:0 --quiet) | gzip -6 >"$tmp/base.cpio.gz"
  # The kernel reads an uncompressed archive after a compressed one only at a 4-byte boundary.
  truncate -s %512 "$tmp/base.cpio.gz"
  # A rename: another run may be reading the cache meanwhile.
  cp "$tmp/base.cpio.gz" "$base.$$" && mv "$base.$$" "$base"
  find "$out" -name 'base-*.cpio.gz' ! -name "base-$key.cpio.gz" -delete
fi

# The per-run archive: the test binary and the command line init runs it with. go test's own
# flags (-run, -count, ...) become the binary's -test.* flags.
mkdir -p "$tmp/run/guestkernel"
CGO_ENABLED=0 go test -c ${tags:+-tags "$tags"} -o "$tmp/run/guestkernel/test" "$pkg"
[ -x "$tmp/run/guestkernel/test" ] || { echo "run.sh: $pkg has no tests" >&2; exit 2; }
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
{
  printf 'exec /guestkernel/test -test.v'
  for a in "$@"; do
    case $a in
      -test.*) ;;
      -run|-run=*|-skip|-skip=*|-count|-count=*|-timeout|-timeout=*|-v|-v=*|-short|-failfast|-parallel|-parallel=*|-cpu|-cpu=*|-shuffle|-shuffle=*|-bench|-bench=*|-benchtime|-benchtime=*)
        a=-test.${a#-} ;;
    esac
    printf ' %s' "$(quote "$a")"
  done
  echo
} >"$tmp/run/guestkernel/cmd"
(cd "$tmp/run" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc -R 0:0 --quiet) >"$tmp/run.cpio"
# The kernel unpacks concatenated archives, compressed or not, one after the other.
cat "$base" "$tmp/run.cpio" >"$tmp/initrd"
echo "run.sh: initramfs $(( $(stat -c %s "$tmp/initrd") / 1024 )) KiB (base $(( $(stat -c %s "$base") / 1024 )) KiB, test $(( $(stat -c %s "$tmp/run.cpio") / 1024 )) KiB), kernel $ver" >&2

start=$(date +%s.%N)
timeout -k 10 "${GUESTKERNEL_TIMEOUT:-600}" qemu-system-x86_64 -machine q35 -accel tcg \
  -m "${GUESTKERNEL_MEM:-768}" -smp "${GUESTKERNEL_SMP:-2}" -cpu max -display none -no-reboot \
  -nodefaults -monitor none -chardev "stdio,id=con,signal=off,logfile=$tmp/console" -serial chardev:con \
  -kernel "$out/vmlinux-$ver" -initrd "$tmp/initrd" \
  -append "console=ttyS0 panic=-1 quiet" </dev/null &
qpid=$!
set +e
wait "$qpid"
qrc=$?
set -e
qpid=
end=$(date +%s.%N)
rc=$(tr -d '\r' <"$tmp/console" | sed -n 's/^GUESTKERNEL-EXIT \([0-9]*\)$/\1/p' | tail -n 1)
echo "run.sh: guest ran $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}') s" >&2
if [ -z "$rc" ]; then
  if [ "$qrc" = 124 ]; then
    echo "run.sh: timed out after ${GUESTKERNEL_TIMEOUT:-600} s" >&2
    exit 124
  fi
  echo "run.sh: the guest ended (qemu exit $qrc) without reporting the tests' exit code" >&2
  exit 125
fi
exit "$rc"
