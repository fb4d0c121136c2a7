#!/usr/bin/env bash
# Install the Debian packages ovroot's build and tests need, when missing.
# Idempotent: does nothing (and needs no network) when all are there.
#
# apt-get update may exit non-zero because one foreign-arch index is
# mid-sync on the mirror; that is not fatal: what matters is whether the
# packages we need are installable afterwards, which apt-get install and the
# kernel fetch check themselves.
set -euo pipefail
# ovmf, qemu-efi-aarch64: the UEFI firmware `ovroot run` boots images with;
# u-boot-qemu: U-Boot for QEMU's arm64 and 32-bit ARM virt boards;
# systemd-boot-efi: the x86_64 EFI loader put on images (the arm64 one is
# fetched as a foreign-arch package, like the kernels); busybox-static: the
# shell-preinit baseline `make bench` compares the init against; mtools and
# dosfstools: the tests read and fsck the boot partition on the host; minisign:
# the test that Debian's minisign verifies what ovroot signs (and the reverse);
# xz-utils: unpacks an x86_64 bzImage once so direct boots skip its emulated
# decompressor (qemu.PVHKernel).
packages=(qemu-system-x86 qemu-system-arm squashfs-tools e2fsprogs cpio cryptsetup-bin
  ovmf qemu-efi-aarch64 u-boot-qemu systemd-boot-efi busybox-static mtools dosfstools minisign xz-utils)

sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: not root and no sudo; install: ${packages[*]}" >&2; exit 1; }
  sudo=(sudo)
fi

updated=0
update() {
  [ "$updated" = 1 ] && return 0
  "${sudo[@]}" apt-get update -q || echo "install-deps: apt-get update reported errors; going on and checking packages" >&2
  updated=1
}

# The arm64 and 32-bit ARM (armhf) kernels are foreign-arch packages. The
# armhf security index is sometimes mid-sync: update's exit status is not
# trusted, the package checks below are.
for a in arm64 armhf; do
  if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
    "${sudo[@]}" dpkg --add-architecture "$a"
    updated=0
    update
  fi
done
if ! apt-cache show linux-image-arm64:arm64 >/dev/null 2>&1 || ! apt-cache show linux-image-amd64 >/dev/null 2>&1 ||
  ! apt-cache show linux-image-armmp:armhf >/dev/null 2>&1 || ! apt-cache show systemd-boot-efi:arm64 >/dev/null 2>&1; then
  update
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  update
  echo "install-deps: installing ${missing[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
for tool in qemu-system-x86_64 qemu-system-aarch64 qemu-system-arm mksquashfs unsquashfs e2fsck mdir fsck.fat; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool still missing after install" >&2; exit 1; }
done
for f in /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/AAVMF/AAVMF_CODE.fd /usr/lib/u-boot/qemu_arm64/u-boot.bin \
  /usr/lib/u-boot/qemu_arm/u-boot.bin /usr/lib/systemd/boot/efi/systemd-bootx64.efi /bin/busybox; do
  [ -e "$f" ] || { echo "install-deps: $f still missing after install" >&2; exit 1; }
done
