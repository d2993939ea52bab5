#!/usr/bin/env bash
# Runs the project-quota tests (csi/quota, and the driver's quota tests) in a throw-away QEMU
# VM booted from a kernel that has XFS and ext4 project quotas, for hosts whose kernel was
# built without them (there those tests are skipped). Root is not needed; KVM is used when
# /dev/kvm is there. Usage: csi/hack/quota-vm.sh [KERNEL_DIR]
#   KERNEL_DIR holds vmlinuz and lib/modules/<version> (default: the slimvirt guest kernel).
set -euo pipefail
kdir=${1:-${SLIMVIRT_CACHE:-/var/cache/slimvirt}/guest/kernel/current}
kdir=$(readlink -f "$kdir")
mods=$(ls -d "$kdir"/lib/modules/*)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,lib,lib64,proc,sys,dev,tmp,mods,etc}

cd "$(dirname "$0")/../.."
CGO_ENABLED=0 go test -c -o "$root/bin/quota.test" ./csi/quota
CGO_ENABLED=0 go test -c -o "$root/bin/driver.test" ./csi/driver

cp "$(command -v busybox)" "$root/bin/busybox"
for tool in mkfs.xfs mkfs.ext4 mount umount losetup; do
	bin=$(command -v "$tool")
	cp "$bin" "$root/sbin/$tool"
	ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		cp -n "$lib" "$root$lib"
	done
done
# Module load order: dependencies first.
order=(crypto/crc32c_generic lib/libcrc32c lib/crc16 fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4 fs/xfs/xfs
	drivers/block/loop fs/quota/quota_tree fs/quota/quota_v2)
i=0
for m in "${order[@]}"; do
	cp "$mods/kernel/$m.ko" "$root/mods/$(printf '%02d' $i)-$(basename "$m").ko"
	i=$((i + 1))
done

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in /mods/*.ko; do insmod "$m" || echo "insmod $m failed"; done
export PATH=/sbin:/bin TMPDIR=/tmp
cd /tmp
/bin/quota.test -test.v -test.count=1 2>&1
/bin/driver.test -test.v -test.count=1 -test.run 'TestQuota|TestRequireQuota' 2>&1
echo "QUOTA-VM-DONE"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd"
accel=tcg
[ -w /dev/kvm ] && accel=kvm
qemu-system-x86_64 -machine accel=$accel -m 2048 -smp 2 -nographic -no-reboot \
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd" -append "console=ttyS0 quiet panic=-1" </dev/null
