// Package imagebuild assembles ovroot's bootable GPT disk images without
// root and without loop devices: a FAT32 boot partition (kernel, initramfs,
// boot info, and the files of its loader: systemd-boot and Boot Loader Spec
// entries on an EFI System Partition, or U-Boot's extlinux.conf; loader.go),
// a squashfs root and a blank data partition, 1 MiB aligned.
// GPT and FAT32 are written with go-diskfs; the squashfs is made by Debian's
// mksquashfs, run rootless (go-diskfs v1.9.4's squashfs writer loses entries
// on trees over ~500 entries, see issue 2). The same inputs give the same
// bytes.
//
// It does not build the initramfs (package initramfs) or boot anything
// (package qemu).
package imagebuild
