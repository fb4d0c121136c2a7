#!/usr/bin/env bash
# Fetch Debian's current kernel package for one architecture and unpack the
# kernel image and its modules into a cache directory:
#
#   scripts/fetch-kernel.sh amd64|arm64|armhf CACHE_DIR
#
# Result: CACHE_DIR/<debarch>/vmlinuz, CACHE_DIR/<debarch>/modules (the
# lib/modules/<version> tree) and CACHE_DIR/<debarch>/release (the version).
# Does nothing when that is already there. The version is whatever Debian's
# linux-image-<debarch> meta-package points at today, so a security update on
# the mirror never breaks the fetch by removing a pinned version.
set -euo pipefail
debarch=${1:?usage: fetch-kernel.sh amd64|arm64|armhf CACHE_DIR}
cache=${2:?usage: fetch-kernel.sh amd64|arm64|armhf CACHE_DIR}
# Debian's kernel flavour: the arch itself, except armhf's multiplatform
# ARMv7 kernel (linux-image-armmp), which is what 32-bit ARM boards and
# QEMU's virt board boot.
flavour=$debarch
[ "$debarch" = armhf ] && flavour=armmp
dest="$cache/$debarch"
if [ -f "$dest/release" ] && [ -e "$dest/vmlinuz" ] && [ -d "$dest/modules" ]; then
  exit 0
fi
meta="linux-image-$flavour:$debarch"
pkg=$(apt-cache depends "$meta" 2>/dev/null | sed -n "s/^ *Depends: \(linux-image-[0-9][^:]*-$flavour\).*/\1/p" | head -n1)
if [ -z "$pkg" ]; then
  echo "fetch-kernel: apt knows no $meta; run: dpkg --add-architecture $debarch && apt-get update" >&2
  exit 1
fi
release=${pkg#linux-image-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-kernel: downloading $pkg:$debarch" >&2
(cd "$tmp" && apt-get download -q "$pkg:$debarch" >&2)
dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/x"
rm -rf "$dest"
mkdir -p "$dest"
cp "$tmp/x/boot/vmlinuz-$release" "$dest/vmlinuz"
mv "$tmp/x/lib/modules/$release" "$dest/modules"
echo "$release" > "$dest/release"
echo "fetch-kernel: $debarch kernel $release in $dest" >&2
