#!/usr/bin/env bash
# Vendors the web console's browser libraries (noVNC, xterm.js and its fit addon) from the npm
# registry into slimctl/webconsole/assets/vendor/, where go:embed puts them into slimctl. The
# files are committed, so builds need no npm; this script re-creates them byte for byte from
# the pinned versions below and refuses a tarball whose sha512 is not the one npm publishes.
set -euo pipefail
cd "$(dirname "$0")/.."

novnc=@novnc/novnc@1.7.0
xterm=@xterm/xterm@5.5.0          # the newest 5.x; 6.x renamed lib/xterm.js to xterm.mjs
fit=@xterm/addon-fit@0.10.0       # the newest release that declares @xterm/xterm ^5

out=slimctl/webconsole/assets/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch SPEC DIR: packs SPEC into $tmp, checks it against npm's dist.integrity, unpacks it into
# $tmp/DIR and appends a line to VERSIONS.
fetch() {
  local spec=$1 dir=$2 tgz want got
  tgz=$(cd "$tmp" && npm pack --silent "$spec")
  want=$(npm view "$spec" dist.integrity)
  got="sha512-$(openssl dgst -sha512 -binary "$tmp/$tgz" | base64 -w0)"
  if [ "$want" != "$got" ]; then
    echo "webassets: $spec: tarball integrity $got, npm publishes $want" >&2
    exit 1
  fi
  mkdir -p "$tmp/$dir"
  tar -xzf "$tmp/$tgz" -C "$tmp/$dir" --strip-components=1 --no-same-owner
  printf '%s %s sha256:%s\n' "$spec" "$want" "$(sha256sum "$tmp/$tgz" | cut -d' ' -f1)" >>"$tmp/VERSIONS"
}

fetch "$novnc" novnc
fetch "$xterm" xterm
fetch "$fit" fit

rm -rf "$out"
mkdir -p "$out/novnc/vendor" "$out/novnc/docs" "$out/xterm/lib" "$out/xterm/css" "$out/addon-fit/lib"
# noVNC: the core library's ES modules, the inflate/deflate they import, and the licenses.
cp -R "$tmp/novnc/core" "$out/novnc/"
cp -R "$tmp/novnc/vendor/pako" "$out/novnc/vendor/"
rm -f "$out/novnc/vendor/pako/README.md"
cp "$tmp/novnc/LICENSE.txt" "$tmp/novnc/AUTHORS" "$out/novnc/"
cp "$tmp"/novnc/docs/LICENSE.* "$out/novnc/docs/"
# xterm.js: the UMD bundle and its stylesheet (no source maps), and the licenses.
cp "$tmp/xterm/lib/xterm.js" "$out/xterm/lib/"
cp "$tmp/xterm/css/xterm.css" "$out/xterm/css/"
cp "$tmp/xterm/LICENSE" "$out/xterm/"
cp "$tmp/fit/lib/addon-fit.js" "$out/addon-fit/lib/"
cp "$tmp/fit/LICENSE" "$out/addon-fit/"
find "$out" -type d -exec chmod 755 {} + && find "$out" -type f -exec chmod 644 {} +

{
  echo "# Vendored by hack/webassets.sh: package, npm dist.integrity, sha256 of the tarball."
  cat "$tmp/VERSIONS"
} >"$out/VERSIONS"
echo "webassets: $(find "$out" -type f | wc -l) files, $(du -sb "$out" | cut -f1) bytes in $out"
