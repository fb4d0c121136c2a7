#!/usr/bin/env bash
# Fetch Debian's systemd-boot EFI binary for one architecture (the UEFI
# boot loader `ovroot build` puts on the ESP of a loader = "uefi" image):
#
#   scripts/fetch-systemd-boot.sh amd64|arm64 CACHE_DIR
#
# Result: CACHE_DIR/<debarch>/systemd-boot<efiarch>.efi. Does nothing when it
# is there. A foreign arch needs `dpkg --add-architecture <debarch> &&
# apt-get update` first, as for the kernels.
set -euo pipefail
debarch=${1:?usage: fetch-systemd-boot.sh amd64|arm64 CACHE_DIR}
cache=${2:?usage: fetch-systemd-boot.sh amd64|arm64 CACHE_DIR}
case $debarch in
amd64) efiarch=x64 ;;
arm64) efiarch=aa64 ;;
*) echo "fetch-systemd-boot: no systemd-boot for $debarch (32-bit ARM boots through U-Boot)" >&2; exit 2 ;;
esac
name="systemd-boot$efiarch.efi"
dest="$cache/$debarch/$name"
[ -s "$dest" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-systemd-boot: downloading systemd-boot-efi:$debarch" >&2
(cd "$tmp" && apt-get download -q "systemd-boot-efi:$debarch" >&2)
dpkg-deb -x "$tmp"/systemd-boot-efi_*.deb "$tmp/x"
mkdir -p "$(dirname "$dest")"
install -m 0644 "$tmp/x/usr/lib/systemd/boot/efi/$name" "$dest"
echo "fetch-systemd-boot: $debarch $name in $dest" >&2
