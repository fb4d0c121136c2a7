// Package boot is the device's boot sequence: what ovroot's /init does as
// PID 1 between the kernel handing over and the real /sbin/init starting.
// cmd/init's main is PID 1's whole life around it: one Boot.Attempt after
// another, with Rescue (the emergency shell, or a pause) in between.
//
// Where to read what:
//
//	sequence_linux.go  Boot.Run, the steps in the order they happen: mount the
//	                   pseudo filesystems, load the kernel modules, wait for the
//	                   root and data partitions, mount the squashfs at /rom, ready
//	                   the upper, stack the overlay, switch_root
//	upper_linux.go     the one place that decides where the upper lives:
//	                   persistent (data partition), volatile or failsafe (tmpfs)
//	data_linux.go      the data partition: probe, first-boot format, repair
//	reset_linux.go     factory reset triggers and glue (package reset does it)
//	reserve_linux.go   the reserve kept for a full data partition
//	attempt.go         panics in an attempt or a data step become errors
//	sys.go             the Sys seam: every privileged operation; sys_linux.go
//	                   is the real one, tests use a recording fake
//	probe.go, ext4.go, format.go, mkfs.go   what a partition holds; the ext4 superblock;
//	                   a power-cut-safe ext4 format (mkfs.go)
//	cmdline.go, partitions.go, log.go   pure parsing and the kmsg logger
//
// The names on the data partition and the state record ovrootctl reads are
// in package layout.
//
// The package never exits the process and turns panics into errors: PID 1
// has no one to report to, so errors are logged with the "ovroot:" prefix
// and returned. The real thing is proven by the QEMU tests in integration/.
package boot
