#!/usr/bin/env bash
# Installs the Debian packages slimvirt's builds, tests and local cluster need. Idempotent:
# a machine that has them all is left alone. Package services are not started (the local
# cluster runs its own containerd, etcd and libvirtd as children).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "deps: must run as root (apt-get install); try: sudo make deps" >&2
  exit 1
fi
packages=(
  # local cluster
  containerd runc etcd-server iptables nftables iproute2 conntrack socat openssl ethtool
  # launcher and guests
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev qemu-system-x86 qemu-utils xfsprogs
  ovmf busybox-static cpio debootstrap syslinux syslinux-common mtools dosfstools xz-utils
  # network tests
  isc-dhcp-client tcpdump
  # builds
  gcc make git pkg-config curl ca-certificates
  # web console tests (headless browser)
  chromium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} Debian packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
# Keep package scripts from starting services on this machine.
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed ${#missing[@]} packages"
