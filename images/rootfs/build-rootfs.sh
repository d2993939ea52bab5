#!/usr/bin/env bash
# Builds a trimmed Debian 12 root filesystem for an image and unpacks it into OUT_DIR.
#   build-rootfs.sh NAME OUT_DIR PACKAGE...
# Two caches in $SLIMVIRT_CACHE/rootfs: the installed tree (NAME-full-<hash>.tar, the hash
# covering this script and the package list) and the trimmed one (NAME-<hash>.tar, also
# covering trim-rootfs.sh), so an unchanged image is unpacked from the cache in seconds and a
# change to the trimming does not download anything. The sizes before and after trimming are
# kept next to the trimmed tree (NAME-<hash>.sizes).
set -euo pipefail
name=${1:?usage: build-rootfs.sh NAME OUT_DIR PACKAGE...}
out=${2:?usage: build-rootfs.sh NAME OUT_DIR PACKAGE...}
shift 2
packages=("$@")
here=$(cd "$(dirname "$0")" && pwd)
cache=${SLIMVIRT_CACHE:-/var/cache/slimvirt}/rootfs
suite=bookworm
mkdir -p "$cache/debs"

fullkey=$( { cat "$here/build-rootfs.sh"; echo "$suite"; printf '%s\n' "${packages[@]}" | sort; } |
  sha256sum | cut -c1-16)
key=$( { echo "$fullkey"; cat "$here/trim-rootfs.sh"; } | sha256sum | cut -c1-16)
full=$cache/$name-full-$fullkey.tar
tarball=$cache/$name-$key.tar
work=$cache/work-$name

# mirror_for SUITE: the URI apt uses for SUITE (deb822 sources or a one-line sources.list).
mirror_for() {
  local uri
  uri=$(awk -v s="$1" '
    /^URIs:/ {u = $2}
    /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == s) {print u; exit}}
    /^deb / {for (i = 2; i <= NF; i++) if ($i == s) {print $(i-1); exit}}
  ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n 1)
  echo "${uri:-$2}"
}

# unmount_under DIR: removes mounts a killed earlier run may have left in DIR.
unmount_under() {
  awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" || true
  done
}

# install: debootstrap + apt-get into $work, cached as $full.
install() {
  unmount_under "$work"
  rm -rf "$work"
  mkdir -p "$work"
  local main security
  main=$(mirror_for "$suite" http://deb.debian.org/debian)
  security=$(mirror_for "$suite-security" http://deb.debian.org/debian-security)
  echo "rootfs $name: debootstrap --variant=minbase $suite from $main"
  debootstrap --variant=minbase --cache-dir="$cache/debs" "$suite" "$work" "$main" >"$work.log" 2>&1 ||
    { tail -n 20 "$work.log" >&2; echo "rootfs $name: debootstrap failed" >&2; exit 1; }
  cat >"$work/etc/apt/sources.list" <<SOURCES
deb $main $suite main
deb $main $suite-updates main
deb $security $suite-security main
SOURCES
  # Package scripts must not start services; the chroot needs DNS for apt.
  printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
  chmod 0755 "$work/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$work/etc/resolv.conf"
  mount -t proc proc "$work/proc"
  if [ ${#packages[@]} -gt 0 ]; then
    echo "rootfs $name: apt-get install ${packages[*]}"
    chroot "$work" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$work.log" 2>&1
    chroot "$work" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${packages[@]}" >>"$work.log" 2>&1 ||
      { tail -n 20 "$work.log" >&2; echo "rootfs $name: apt-get install failed" >&2; exit 1; }
  fi
  umount "$work/proc"
  rm -f "$work/usr/sbin/policy-rc.d" "$work/etc/resolv.conf"
  tar --numeric-owner --xattrs -C "$work" -cf "$full.tmp" .
  mv "$full.tmp" "$full"
  find "$cache" -maxdepth 1 -name "$name-full-*.tar" ! -name "${full##*/}" -delete
  rm -f "$work.log"
}

# trim: trims the full tree in $work with trim-rootfs.sh, cached as $tarball.
trim() {
  local before after
  before=$(du -sxm "$work" | cut -f1)
  bash "$here/trim-rootfs.sh" "$name" "$work"
  after=$(du -sxm "$work" | cut -f1)
  printf 'before_trim_mib=%s\nafter_trim_mib=%s\n' "$before" "$after" >"$cache/$name-$key.sizes"
  echo "rootfs $name: ${before} MiB before trimming, ${after} MiB after"
  tar --numeric-owner --xattrs -C "$work" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  # Older trimmed trees of this image are dead weight.
  find "$cache" -maxdepth 1 -name "$name-*.tar" ! -name "$name-full-*" ! -name "${tarball##*/}" -delete
  find "$cache" -maxdepth 1 -name "$name-*.sizes" ! -name "$name-$key.sizes" -delete
}

if [ ! -f "$tarball" ]; then
  trap 'unmount_under "$work"; rm -rf "$work" "$work.log"' EXIT
  if [ -f "$full" ]; then
    unmount_under "$work"
    rm -rf "$work"
    mkdir -p "$work"
    tar --numeric-owner --xattrs -C "$work" -xpf "$full"
  else
    install
  fi
  trim
  rm -rf "$work"
  trap - EXIT
fi
rm -rf "$out"
mkdir -p "$out"
tar --numeric-owner --xattrs -C "$out" -xpf "$tarball"
echo "rootfs $name: $out from $tarball ($(cat "$cache/$name-$key.sizes" | tr '\n' ' '))"
