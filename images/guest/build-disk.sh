#!/usr/bin/env bash
# Makes the guest's bootable disk: one FAT filesystem over the whole image ("superfloppy", no
# partition table; SeaBIOS boots its boot sector) with syslinux, the kernel, the initramfs and
# syslinux.cfg. Uses mkfs.vfat, syslinux (mtools installer) and mcopy: no loop devices, no
# mounts. Usage: build-disk.sh VMLINUZ INITRD OUT.raw [SIZE_MIB]
set -euo pipefail
vmlinuz=${1:?usage: build-disk.sh VMLINUZ INITRD OUT.raw [SIZE_MIB]}
initrd=${2:?usage}
out=${3:?usage}
size=${4:-64}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$out.tmp
rm -f "$tmp"
mkfs.vfat -C -n SLIMVIRT "$tmp" $((size * 1024)) >/dev/null
syslinux --install "$tmp"
mcopy -i "$tmp" "$vmlinuz" ::vmlinuz
mcopy -i "$tmp" "$initrd" ::initrd.gz
mcopy -i "$tmp" "$here/syslinux.cfg" ::syslinux.cfg
mv "$tmp" "$out"
echo "build-disk: $out (${size} MiB)"
