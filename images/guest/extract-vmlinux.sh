#!/usr/bin/env bash
# Unpacks the ELF kernel from Debian's bzImage (an xz stream after the setup code and the
# decompressor). QEMU boots that ELF directly through its PVH entry point, which skips the
# kernel's own decompression: under TCG that saves 10-20 s per boot.
# Usage: extract-vmlinux.sh VMLINUZ OUT
set -euo pipefail
in=${1:?usage: extract-vmlinux.sh VMLINUZ OUT}
out=${2:?usage: extract-vmlinux.sh VMLINUZ OUT}
off=$(LC_ALL=C grep -abo $'\xfd7zXZ\x00' "$in" | head -n 1 | cut -d: -f1)
[ -n "$off" ] || { echo "extract-vmlinux: no xz stream in $in" >&2; exit 1; }
# xz complains about the bytes after the stream; the ELF check below is what counts.
tail -c +$((off + 1)) "$in" | xz -dc >"$out.tmp" 2>/dev/null || true
if [ "$(head -c 4 "$out.tmp" | od -An -c | tr -d ' ')" != '177ELF' ]; then
  rm -f "$out.tmp"
  echo "extract-vmlinux: $in did not unpack to an ELF file" >&2
  exit 1
fi
readelf -n "$out.tmp" | grep -q 'Xen.*0x00000012\|Unknown note type: (0x00000012)' ||
  echo "extract-vmlinux: warning: $out has no PVH entry note; QEMU will not boot it directly" >&2
mv "$out.tmp" "$out"
