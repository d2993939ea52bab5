#!/usr/bin/env bash
# Packs the guest's initramfs: static busybox, the kernel modules listed in modules.txt with
# everything they depend on, and the init scripts. Usage:
#   build-initrd.sh KERNEL_DIR OUT.gz
# KERNEL_DIR is what fetch-kernel.sh unpacked (vmlinuz + lib/modules/<version>).
set -euo pipefail
kdir=${1:?usage: build-initrd.sh KERNEL_DIR OUT.gz}
out=${2:?usage: build-initrd.sh KERNEL_DIR OUT.gz}
here=$(cd "$(dirname "$0")" && pwd)
kdir=$(cd "$kdir" && pwd -P)
ver=$(basename "$kdir")
mods=$kdir/lib/modules/$ver
[ -f "$mods/modules.dep" ] || { echo "build-initrd: no $mods/modules.dep" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/acpi/PWRF,proc,sys,dev,run,tmp,mnt,www,root,var/run}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
# One link per applet, as busybox --install would make them in the guest (but at build time,
# so boot does not pay for it).
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf /bin/busybox "$root/bin/$applet"
done
ln -sf ../bin/busybox "$root/sbin/init"
# The kernel runs /sbin/modprobe for filesystems (fs-ext4) and crypto algorithms on demand.
ln -sf ../bin/busybox "$root/sbin/modprobe"

# Modules: the named ones plus the closure of their dependencies from modules.dep.
boot=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/modules-boot.txt")
names="$boot $(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/modules.txt")"
declare -A want=()
queue=()
for n in $names; do
  path=$(awk -v n="$n" -F: '{f=$1; sub(/.*\//, "", f); sub(/\.ko$/, "", f); gsub(/-/, "_", f); if (f == n) {print $1; exit}}' "$mods/modules.dep")
  [ -n "$path" ] || { echo "build-initrd: module $n not in $mods/modules.dep" >&2; exit 1; }
  queue+=("$path")
done
while [ ${#queue[@]} -gt 0 ]; do
  m=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${want[$m]:-}" ] && continue
  want[$m]=1
  for d in $(awk -v m="$m:" '$1 == m {for (i = 2; i <= NF; i++) print $i}' "$mods/modules.dep"); do
    queue+=("$d")
  done
done
for m in "${!want[@]}"; do
  mkdir -p "$root/lib/modules/$ver/$(dirname "$m")"
  cp "$mods/$m" "$root/lib/modules/$ver/$m"
done
cp "$mods/modules.builtin" "$mods/modules.order" "$root/lib/modules/$ver/"
busybox depmod -b "$root" "$ver"
printf '%s\n' $boot > "$root/etc/modules"

install -m 0755 "$here/init" "$root/init"
install -m 0644 "$here/guest-lib.sh" "$root/etc/slimvirt-guest.sh"
install -m 0755 "$here/udhcpc.script" "$root/etc/udhcpc.script"
install -m 0755 "$here/power-button" "$root/etc/acpi/PWRF/00000080"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf 'slimvirt-guest\n' > "$root/etc/hostname"

mkdir -p "$(dirname "$out")"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc -R 0:0 --quiet) | gzip -9 > "$out.tmp"
mv "$out.tmp" "$out"
echo "build-initrd: $out ($(du -k "$out" | cut -f1) KiB, ${#want[@]} modules, kernel $ver)"
