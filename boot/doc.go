// Package boot is the device's boot sequence: what ovroot's /init does as
// PID 1 between the kernel handing over and the real /sbin/init starting.
//
// Boot.Run reads top to bottom in the order things happen: mount the pseudo
// filesystems, load the kernel modules the initramfs carries, wait for the
// root and data partitions, mount the squashfs at /rom, mount (formatting on
// first boot) the data partition at /overlay, stack the overlay root, and
// switch_root into it. The fallbacks (a tmpfs upper when the data partition is
// unusable) are decided in one place, Run, not inside the steps.
//
// Privileged operations (mount, module load, block-device discovery, mkfs,
// switch_root) sit behind the Sys interface; everything else is a plain
// function of its inputs (cmdline, uevent files, partition selection, the
// blank check) and is tested without root. The real thing is proven by the
// QEMU tests in integration/.
//
// The package never panics and never exits the process: PID 1 has no one to
// report to, so errors are logged with the "ovroot:" prefix and returned.
package boot
