package boot

import (
	"time"

	"github.com/ovroot/ovroot/verity"
)

// Sys is the seam between the boot decisions and the privileged operations
// that carry them out. The Linux implementation is LinuxSys; tests use a
// recording fake.
type Sys interface {
	// Mount is mount(2).
	Mount(source, target, fstype string, flags uintptr, data string) error
	// Unmount detaches target (lazily: used only to undo a failed attempt).
	Unmount(target string) error
	// LoadModule loads a kernel module file; already loaded is not an error.
	LoadModule(path string) error
	// BlockDevices lists the block devices the kernel knows now.
	BlockDevices() ([]BlockDev, error)
	// Probe tells what a block device holds.
	Probe(dev string) (Content, error)
	// Format makes a filesystem of type fstype labelled label on dev, of
	// at most size bytes (0: all of dev).
	Format(dev, fstype, label string, size int64) error
	// Repair runs the filesystem checker in preen mode on dev (from the
	// backup superblock when the primary is gone) and returns its output.
	Repair(dev, fstype string) (string, error)
	// ReplayJournal replays the journal of the ext4 on dev (e2fsck -E
	// journal_only), only when its superblock says it needs recovery;
	// errNoRecovery when it does not.
	ReplayJournal(dev string) (string, error)
	// UndoFsck undoes (apply) or forgets (!apply) every write Repair and
	// ReplayJournal made to dev on this boot: each e2fsck ran with an undo
	// file in RAM (-z), and they are written back newest first, every
	// checksum verified before the first byte is written. It says what it
	// did; after an error the partition may hold some of the writes.
	UndoFsck(dev string, apply bool) (string, error)
	// WaitForKey watches the evdev device (all /dev/input/event* when "")
	// for key code during window, and reports whether it was held for hold.
	// A press that starts inside the window may finish its hold after it.
	WaitForKey(device string, code int, hold, window time.Duration) (bool, error)
	// FreeBytes is the space of the filesystem holding path that is
	// available to unprivileged writers (statfs f_bavail): conservative.
	FreeBytes(path string) (int64, error)
	// CanWrite reports whether n bytes can be written and synced in dir now
	// (it writes a scratch file and removes it).
	CanWrite(dir string, n int64) (bool, error)
	// ReadConsoleLine reads one line typed on the console within timeout
	// ("" when none was).
	ReadConsoleLine(timeout time.Duration) (string, error)
	// OpenDisk opens the whole disk /dev/<name> for its partition table.
	OpenDisk(name string) (Disk, error)
	// GrowFS grows the filesystem of dev, mounted at mountpoint, to fill
	// dev; from == to (bytes) when it already does.
	GrowFS(dev, mountpoint string) (from, to int64, err error)
	// StartTrashCollector deletes the contents of the trash directory in a
	// background process that outlives switch_root.
	StartTrashCollector(trash string) error
	// OpenVerity maps dev through dm-verity with the tree v describes,
	// reads every block of it (a block that does not match fails), and
	// returns the mapped device's node.
	OpenVerity(dev string, v verity.Info) (string, error)
	// SquashfsBytes is the size of the squashfs at byte 0 of dev (its
	// superblock's bytes_used).
	SquashfsBytes(dev string) (int64, error)
	// MapLayer makes size bytes of dev from byte off a read-only block
	// device of its own, named for the layer, and returns its node.
	MapLayer(dev, name string, off, size int64) (string, error)
	// UnmapLayer removes the layer's mapping (none: not an error).
	UnmapLayer(name string) error
	// SwitchRoot makes newRoot the root and executes init in it as PID 1.
	// It returns only on failure.
	SwitchRoot(newRoot, init string) error
}
