#!/bin/sh
# Runs inside the launcher tree (chroot in a private mount namespace, see rootfs_test.go):
# libvirtd with the QEMU driver only and the container settings the launcher uses, a domain
# booting the guest disk through a qcow2 overlay, then an ACPI shutdown. The writable libvirt
# directories become tmpfs mounts of the namespace, so the tree stays untouched.
set -eu
# Never on a real system: the test's wrapper leaves this file in the namespace's own /tmp.
[ -e /tmp/.slimvirt-image-test ] || { echo "libvirt-boot.sh: not inside the image test chroot" >&2; exit 1; }
for d in /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
  [ -d "$d" ] || mkdir -p "$d" # the trimmed tree has them all
  mount -t tmpfs tmpfs "$d"
done
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt /tmp/drivers
cat >/etc/libvirt/qemu.conf <<'CONF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
security_driver = "none"
stdio_handler = "file"
CONF
echo 'unix_sock_dir = "/run/libvirt"' >/etc/libvirt/libvirtd.conf
ln -s /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so /tmp/drivers/
LIBVIRT_DRIVER_DIR=/tmp/drivers /usr/sbin/libvirtd -f /etc/libvirt/libvirtd.conf >/tmp/libvirtd.log 2>&1 &
lpid=$!
trap 'kill $lpid 2>/dev/null; wait $lpid 2>/dev/null || true' EXIT
v() { virsh -c qemu:///system "$@"; }
for i in $(seq 100); do v version >/dev/null 2>&1 && break; sleep 0.3; done
v version || { cat /tmp/libvirtd.log; exit 1; }
qemu-img create -q -f qcow2 -b /mnt/disk.qcow2 -F qcow2 /tmp/overlay.qcow2
cat >/tmp/guest.xml <<'XML'
<domain type='qemu'>
  <name>imagetest</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/tmp/overlay.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
    </disk>
    <interface type='user'><mac address='52:54:00:00:02:01'/><model type='virtio'/></interface>
    <serial type='file'><source path='/tmp/console.log'/></serial>
  </devices>
</domain>
XML
v create /tmp/guest.xml || { tail -n 20 /tmp/libvirtd.log; cat /var/log/libvirt/qemu/imagetest.log; exit 1; }
for i in $(seq 600); do grep -q SLIMVIRT-GUEST-UP /tmp/console.log 2>/dev/null && break; sleep 0.5; done
grep SLIMVIRT-GUEST-UP /tmp/console.log || { cat /tmp/console.log /var/log/libvirt/qemu/imagetest.log; exit 1; }
v shutdown imagetest
for i in $(seq 240); do v domstate imagetest >/dev/null 2>&1 || break; sleep 0.5; done
grep SLIMVIRT-GUEST-POWEROFF /tmp/console.log
if v domstate imagetest >/dev/null 2>&1; then
  echo "domain still running after the ACPI shutdown"
  v destroy imagetest
  exit 1
fi
echo libvirt-boot-ok
