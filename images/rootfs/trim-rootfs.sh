#!/usr/bin/env bash
# Removes from an installed Debian tree what a container never uses.
#   trim-rootfs.sh NAME DIR
# Kept on purpose: the dpkg database (so scanners can list what is installed), /etc,
# ca-certificates, glibc. Removed: package management (apt, perl, debconf), so these images
# are not meant to be extended with apt-get; build from a fuller Debian image for that.
set -euo pipefail
name=${1:?usage: trim-rootfs.sh NAME DIR}
root=${2:?usage: trim-rootfs.sh NAME DIR}
[ -d "$root/usr/lib/x86_64-linux-gnu" ] || { echo "trim-rootfs: $root is not a root filesystem" >&2; exit 1; }
cd "$root"
libdir=usr/lib/x86_64-linux-gnu

# Documentation, manuals, translations, caches, logs, time zones other than UTC.
rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/groff usr/share/lintian \
  usr/share/linda usr/share/bug usr/share/menu usr/share/bash-completion usr/share/zsh \
  usr/share/common-licenses usr/share/iso-codes usr/share/xml/iso-codes usr/share/alsa \
  usr/share/icons usr/share/gst-plugins-base usr/share/gcc usr/share/gdb
find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf usr/share/i18n/locales usr/share/i18n/charmaps
find usr/share/zoneinfo -mindepth 1 -maxdepth 1 ! -name Etc ! -name UTC ! -name zone.tab ! -name tzdata.zi -exec rm -rf {} +
rm -rf var/cache/apt/* var/lib/apt/lists/* var/cache/debconf/*-old var/lib/dpkg/*-old \
  var/cache/ldconfig/aux-cache var/log/* tmp/* var/tmp/*
find . -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
# Package management: nothing installs packages into a running image.
rm -rf usr/bin/apt* usr/lib/apt usr/libexec/apt etc/apt/apt.conf.d/docker-* \
  usr/bin/perl* usr/lib/x86_64-linux-gnu/perl-base usr/share/perl5 usr/share/debconf \
  usr/bin/debconf* var/cache/debconf $libdir/libapt-*.so*
# No set-user-ID or set-group-ID programs: nothing in these containers changes identity.
find . -xdev -type f -perm /6000 -exec chmod ug-s {} +
# Character sets beyond glibc's built-in UTF-8/ASCII/UCS; plugins that drag in libraries
# for media and password databases nothing here uses.
rm -rf $libdir/gconv $libdir/gstreamer1.0 $libdir/gstreamer-1.0 $libdir/sasl2/libsasldb.so* \
  $libdir/security/pam_userdb.so

case $name in
launcher)
  # QEMU: one target, the tools the launcher does not run, the modules for sound, spice,
  # OpenGL, USB passthrough and other architectures. Kept: the TCG accelerator module
  # (QEMU without KVM needs it) and the virtio GPU modules (video model "virtio").
  rm -rf usr/bin/qemu-system-i386 usr/libexec/qemu-system-i386 usr/bin/qemu-system-x86_64-microvm \
    usr/bin/qemu-storage-daemon usr/bin/qemu-nbd usr/bin/qemu-io usr/bin/qemu-pr-helper \
    usr/bin/qemu-edid usr/bin/qemu-keymap usr/bin/elf2dmp usr/libexec/qemu-bridge-helper
  for f in $libdir/qemu/*.so; do
    case ${f##*/} in
      accel-tcg-x86_64.so | hw-display-virtio-gpu.so | hw-display-virtio-gpu-pci.so | hw-display-virtio-vga.so) ;;
      *) rm -f "$f" ;;
    esac
  done
  # Firmware for x86 PCs only: SeaBIOS and the VGA BIOSes of the video models offered, the
  # option ROMs for direct kernel boot, OVMF (4 MiB builds, plain and Secure Boot), and the
  # iPXE ROMs of the NIC models offered (QEMU refuses to start a NIC whose ROM is missing).
  for f in usr/share/qemu/*; do
    case ${f##*/} in
      kvmvapic.bin | linuxboot*.bin | multiboot*.bin | pvh.bin | keymaps | firmware | trace-events-all) ;;
      *) rm -rf "$f" ;;
    esac
  done
  find usr/share/qemu/keymaps -mindepth 1 ! -name en-us -exec rm -rf {} +
  for f in usr/share/seabios/*; do
    case ${f##*/} in
      bios-256k.bin | bios.bin | vgabios-stdvga.bin | vgabios-virtio.bin | vgabios-bochs-display.bin | vgabios-cirrus.bin | vgabios-ramfb.bin) ;;
      *) rm -rf "$f" ;;
    esac
  done
  rm -f usr/lib/ipxe/*.rom
  for f in usr/lib/ipxe/qemu/*; do
    case ${f##*/} in
      efi-virtio.rom | efi-e1000.rom | efi-e1000e.rom | efi-rtl8139.rom) ;;
      *) rm -f "$f" ;;
    esac
  done
  for f in usr/share/OVMF/*; do
    case ${f##*/} in
      OVMF_CODE_4M.fd | OVMF_VARS_4M.fd | OVMF_CODE_4M.secboot.fd | OVMF_VARS_4M.ms.fd) ;;
      *) rm -f "$f" ;;
    esac
  done
  rm -rf usr/share/ovmf
  # The account Debian's libvirt resolves at startup (libvirt-daemon-system would make it;
  # the launcher adds it too, but a read-only root filesystem needs it here).
  grep -q '^libvirt-qemu:' etc/passwd ||
    echo 'libvirt-qemu:x:64055:64055:libvirt QEMU:/var/lib/libvirt:/usr/sbin/nologin' >>etc/passwd
  grep -q '^libvirt-qemu:' etc/group || echo 'libvirt-qemu:x:64055:' >>etc/group
  # The launcher's own account (KubeVirt's qemu, 107): the compute container, libvirtd and QEMU
  # run as it; libvirt looks its name and home up.
  grep -q '^qemu:' etc/passwd || echo 'qemu:x:107:107:qemu:/var/run/libvirt:/usr/sbin/nologin' >>etc/passwd
  grep -q '^qemu:' etc/group || echo 'qemu:x:107:' >>etc/group
  mkdir -p var/lib/libvirt/qemu var/log/libvirt/qemu var/cache/libvirt/qemu
  # libvirt: the launcher loads only the QEMU driver.
  rm -f $libdir/libvirt/connection-driver/libvirt_driver_{interface,network,nodedev,nwfilter,secret,storage}.so
  rm -rf $libdir/libvirt/storage-backend $libdir/libvirt/storage-file
  ;;
node)
  rm -rf usr/bin/qemu-storage-daemon usr/bin/qemu-nbd usr/bin/qemu-io usr/bin/qemu-pr-helper \
    usr/bin/qemu-edid usr/lib/x86_64-linux-gnu/qemu
  ;;
esac

# Shared libraries nothing needs any more: walk DT_NEEDED from every ELF file that is not a
# plain library (programs, plugins in subdirectories), keep glibc whole (it dlopens its NSS
# modules), and remove the rest of the top-level libraries.
libname() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
declare -A needed=() seen=()
queue=()
while IFS= read -r -d '' f; do
  [ "${f%/*}" = "./$libdir" ] && case ${f##*/} in lib*.so*) continue ;; esac
  head -c 4 "$f" 2>/dev/null | grep -q ELF || continue
  queue+=("$f")
done < <(find . -xdev -type f \( -perm -u+x -o -name '*.so*' \) -print0)
while [ ${#queue[@]} -gt 0 ]; do
  f=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${seen[$f]:-}" ] && continue
  seen[$f]=1
  for n in $(libname "$f"); do
    [ -n "${needed[$n]:-}" ] && continue
    needed[$n]=1
    [ -e "$libdir/$n" ] && queue+=("$(realpath "$libdir/$n")")
  done
done
removed=0
for f in $libdir/lib*.so $libdir/lib*.so.*; do
  [ -e "$f" ] || continue
  base=${f##*/}
  case $base in
    libc.so* | libm.so* | libmvec.so* | libdl.so* | libpthread.so* | librt.so* | libresolv.so* | \
      libnss_* | libanl.so* | libutil.so* | libthread_db.so* | libBrokenLocale.so* | libgcc_s.so* | \
      libidn2.so* | libc_malloc_debug.so* | libmemusage.so* | libpcprofile.so*) continue ;;
    # The launcher (cgo, libvirt.org/go/libvirt) is added after trimming and links these.
    libvirt.so* | libvirt-qemu.so* | libvirt-lxc.so* | libvirt-admin.so*) continue ;;
  esac
  soname=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ -n "$soname" ] && [ -n "${needed[$soname]:-}" ] && continue
  [ -n "${needed[$base]:-}" ] && continue
  rm -f "$f"
  removed=$((removed + 1))
done
# Symlinks left pointing at nothing.
find $libdir -maxdepth 1 -xtype l -delete
echo "trim-rootfs: $name: removed $removed unused shared libraries"
