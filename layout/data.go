package layout

import "path/filepath"

// The data filesystem, mounted at OverlayDir, holds the overlay's upper and
// work directories and, in MetaDir, the init's own files. Every name the
// init, the factory reset and ovrootctl use there is defined here:
//
//	upper/                  overlayfs upper: every change to the factory root
//	work/                   overlayfs workdir
//	.ovroot-space-probe     scratch file of the boot's "is there room" check
//	.ovroot/reserve         ReserveBytes held back for a full partition
//	.ovroot/reset-request   JSON ResetRequest: a pending factory reset
//	.ovroot/last-reset      JSON ResetRecord: the last completed reset
//	.ovroot/restore.tar.new a backup being staged by ovrootctl restore (removed if incomplete)
//	.ovroot/restore.tar     the staged backup (OCI layer tarball) a restore request names
//	.ovroot/keep.new/       kept paths being copied, or the backup being unpacked (discarded if a crash interrupts)
//	.ovroot/keep/           kept paths or the unpacked backup, synced: the future upper
//	.ovroot/trash/          retired uppers and workdirs, deleted in the background
//	.ovroot/upper-build, slot-log, highest-version   two-slot images (slot.go)
const (
	MetaDir          = ".ovroot"
	ReserveFile      = "reserve"
	ResetRequestFile = "reset-request"
	LastResetFile    = "last-reset"
	KeepNewDir       = "keep.new"
	RestoreFile      = "restore.tar"
	RestoreNewFile   = RestoreFile + ".new"
	KeepDir          = "keep"
	TrashDir         = "trash"
	SpaceProbeFile   = ".ovroot-space-probe"

	// ReserveBytes is the size of the reserve: released when the data
	// filesystem is full, so the overlay still mounts read-write (it needs
	// room in its work directory) and a factory reset still has room for
	// its few new directories and records.
	ReserveBytes = 1 << 20
)

// Paths the init writes in RunDir (the /run tmpfs, carried into the real
// root), for ovrootctl.
var (
	// StateFile is the JSON State record of the boot.
	StateFile = filepath.Join(RunDir, "state")
	// FailsafeDir holds the upper and work directories of a failsafe boot
	// (a tmpfs: the data partition is mounted read-only then).
	FailsafeDir = filepath.Join(RunDir, "failsafe")
)

// Meta is dir/MetaDir/name: a file of the init's on the data filesystem
// mounted at dir.
func Meta(dir, name string) string { return filepath.Join(dir, MetaDir, name) }

// Ext4Sysfs is the kernel's directory of attributes of the ext4 on the
// block device dev (/dev/NAME or NAME): errors_count, last_error_func,
// last_error_errcode. The init records errors_count at boot and ovrootctl
// status compares it with the count now.
func Ext4Sysfs(dev string) string { return filepath.Join("/sys/fs/ext4", filepath.Base(dev)) }
