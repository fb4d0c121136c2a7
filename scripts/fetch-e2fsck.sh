#!/usr/bin/env bash
# Fetch Debian's e2fsck-static for one architecture (a statically linked
# e2fsck the initramfs carries to repair the data partition):
#
#   scripts/fetch-e2fsck.sh amd64|arm64|armhf CACHE_DIR
#
# Result: CACHE_DIR/<debarch>/e2fsck. Does nothing when it is there.
set -euo pipefail
debarch=${1:?usage: fetch-e2fsck.sh amd64|arm64|armhf CACHE_DIR}
cache=${2:?usage: fetch-e2fsck.sh amd64|arm64|armhf CACHE_DIR}
dest="$cache/$debarch/e2fsck"
[ -x "$dest" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-e2fsck: downloading e2fsck-static:$debarch" >&2
(cd "$tmp" && apt-get download -q "e2fsck-static:$debarch" >&2)
dpkg-deb -x "$tmp"/e2fsck-static_*.deb "$tmp/x"
mkdir -p "$(dirname "$dest")"
install -m 0755 "$tmp/x/sbin/e2fsck.static" "$dest"
echo "fetch-e2fsck: $debarch e2fsck in $dest" >&2
