#!/usr/bin/env bash
# Builds the test images Kubernetes' storage e2e specs run, under the names the suite asks for
# (registry.k8s.io/e2e-test-images/...), since no registry is reachable: busybox (Debian's
# static busybox), agnhost (built from source by build.sh, with busybox's applets beside it for
# the shell, nsenter and mount the specs call), and stand-ins for nginx and glibc-dns-testing
# (the specs only run shell commands in them), and the example volume populator (built by
# build.sh). Writes one tarball per image into $1.
set -euo pipefail
out=${1:?usage: images.sh OUTDIR}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
CACHE=${SLIMVIRT_CACHE:-/var/cache/slimvirt}
agnhost="$CACHE/k8s/$K8S_VERSION/e2e/bin/agnhost"
root=$(cd "$(dirname "$0")/../.." && pwd)
reg=registry.k8s.io/e2e-test-images
[ -x "$agnhost" ] || { echo "images.sh: $agnhost is missing (run e2e/storagesuite/build.sh)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "images.sh: /bin/busybox is needed (Debian's busybox-static, make deps)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/usr/share/nginx/html"
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
# The specs write block devices with `dd oflag=nocache`, which busybox's dd does not know:
# GNU dd (coreutils) stands in for it. Debian's busybox shell runs its own applets before PATH,
# so /bin/sh is bash, which finds dd on PATH and has the `let` the specs' loops use (dash has
# not). Both come with the libraries they link.
for prog in dd bash; do
  rm -f "$rootfs/bin/$prog"
  cp "/bin/$prog" "$rootfs/bin/$prog"
  for lib in $(ldd "/bin/$prog" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
done
ln -sf bash "$rootfs/bin/sh"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$rootfs/etc/group"
echo "slimvirt e2e nginx stand-in" > "$rootfs/usr/share/nginx/html/index.html"

build() { # NAME TAG ARGS...
  local name=$1 tag=$2; shift 2
  (cd "$root" && go run ./images/cmd/imagebuild -tag "$tag" -o "$out/$name.tar" -rootfs "$rootfs" "$@")
}
build busybox "$reg/busybox:1.37.0-2" -cmd sh
build agnhost "$reg/agnhost:2.66.1" -add "$agnhost:/agnhost:0755" -entrypoint /agnhost
build nginx "$reg/nginx:1.27.0-2" -cmd httpd -cmd -f -cmd -p -cmd 80 -cmd -h -cmd /usr/share/nginx/html
build hello-populator registry.k8s.io/sig-storage/hello-populator:v1.0.1 \
  -add "$(dirname "$agnhost")/hello-populator:/hello-populator:0755" -entrypoint /hello-populator
build glibc-dns-testing "$reg/glibc-dns-testing:2.1.1" -cmd sh
echo "e2e storage test images in $out: $(ls "$out" | tr '\n' ' ')"
