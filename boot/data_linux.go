package boot

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// mountData mounts the data partition at /overlay, formatting it first when
// it is blank. A filesystem that does not mount gets one repair attempt.
// Anything that still cannot be mounted is left alone (it may hold
// someone's data) unless the config says on_corrupt = "format".
func (b *Boot) mountData(dev BlockDev) error {
	b.fault("in-data")
	if b.readOnly(dev) {
		return fmt.Errorf("data partition %s is read-only (write-protected: /sys/class/block/%s/ro is 1): not mounted, checked or formatted", dev, dev.Name)
	}
	content, err := b.Sys.Probe(dev.Path())
	if err != nil {
		return fmt.Errorf("probe data partition %s: %w", dev, err)
	}
	fstype := b.cfg.DataFSType
	var problem error
	switch content {
	case ContentBlank:
		b.Warnf("data partition %s is blank: formatting it %s (first boot)", dev, fstype)
		if err := b.format(dev); err != nil {
			return err
		}
		return b.mountDataFS(dev)
	case Content(fstype):
		err := b.mountDataFS(dev)
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) {
			// The kernel refuses a read-write mount of a device that
			// refuses writes: nothing to repair, and e2fsck could not.
			return fmt.Errorf("%w: the device refuses writes (write-protected?): not checked or formatted", err)
		}
		if errors.Is(err, unix.EIO) {
			// The storage failed a read or write the mount made (ext4
			// says EUCLEAN or EBADMSG for damage it finds). e2fsck on
			// failing storage repairs nothing and may make it worse:
			// the partition is left as it is for the next boot, or for
			// someone to copy off.
			return fmt.Errorf("%w (the storage is failing): not repaired or formatted, left as it is", err)
		}
		b.Warnf("%v", err)
		if b.replayAndMount(dev, err) {
			return nil
		}
		problem = b.repairAndMount(dev, err)
	case ContentExt4Damaged:
		b.Warnf("data partition %s: %s", dev, content)
		problem = b.repairAndMount(dev, fmt.Errorf("data partition %s: %s", dev, content))
	default:
		problem = fmt.Errorf("data partition %s holds %s content, not %s", dev, content, fstype)
	}
	if problem == nil {
		return nil
	}
	if b.cfg.OnCorrupt != "format" {
		if b.dataChanged {
			return fmt.Errorf("%w: leaving it as it is now (on_corrupt = keep)", problem)
		}
		return fmt.Errorf("%w: leaving it untouched (on_corrupt = keep)", problem)
	}
	b.Warnf("%v: formatting it %s because on_corrupt = format; its old content is lost", problem, fstype)
	if err := b.format(dev); err != nil {
		return err
	}
	b.state.Warnings = append(b.state.Warnings, fmt.Sprintf("data partition was reformatted (on_corrupt = format): %v", problem))
	return b.mountDataFS(dev)
}

// replayAndMount replays the journal and mounts again, when the kernel
// refused a filesystem whose journal holds committed changes. The kernel
// checks the group descriptors on the disk before it replays the journal
// (seen on Debian's 6.1: "ext4_check_descriptors: Block bitmap for group
// 32 not in group (block 0)"), so a power cut during an online grow that
// added a meta_bg descriptor block, after its commit and before its
// checkpoint, leaves a filesystem that is consistent once replayed (host
// e2fsck -fn clean) but does not mount. It reports whether it mounted.
func (b *Boot) replayAndMount(dev BlockDev, cause error) bool {
	if !errors.Is(cause, unix.EUCLEAN) {
		return false
	}
	out, err := b.Sys.ReplayJournal(dev.Path())
	if errors.Is(err, errNoRecovery) {
		return false
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			b.Logf("fsck: %s", l)
		}
	}
	if err != nil {
		b.Warnf("replay the journal of %s: %v", dev.Path(), err)
		return false
	}
	if err := b.mountDataFS(dev); err != nil {
		// The repair that follows may still mount it; if not, its
		// rollback undoes this replay too.
		b.Warnf("journal of %s replayed, but: %v", dev.Path(), err)
		return false
	}
	b.keepFsckChanges(dev)
	b.Warnf("the kernel refused %s before replaying its journal; replayed it with e2fsck -E journal_only and mounted", dev.Path())
	return true
}

// repairAndMount runs one repair and mounts again; it returns nil when the
// filesystem is mounted, else why not.
func (b *Boot) repairAndMount(dev BlockDev, cause error) error {
	fstype := b.cfg.DataFSType
	b.Warnf("repairing %s (%s)", dev.Path(), fstype)
	t := b.now()
	out, err := b.Sys.Repair(dev.Path(), fstype)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			b.Logf("fsck: %s", l)
		}
	}
	if err != nil {
		return b.undoFsck(dev, fmt.Errorf("%v; repair failed: %w", cause, err))
	}
	if err := b.mountDataFS(dev); err != nil {
		return b.undoFsck(dev, fmt.Errorf("%v; e2fsck finished, but: %w", cause, err))
	}
	b.keepFsckChanges(dev)
	b.Warnf("repaired %s in %d ms", dev.Path(), ms(b.now().Sub(t)))
	b.state.Warnings = append(b.state.Warnings, fmt.Sprintf("data partition was repaired at boot: %v", cause))
	return nil
}

// undoFsck writes back what this boot's e2fsck runs changed on the data
// partition, after a repair that did not end in a mounted filesystem:
// on_corrupt = "keep" promises the partition as it was, and the bytes a
// technician needs to recover it by hand. It returns problem, and says
// loudly, on the console and in the state, when the rollback failed and
// the partition stays changed.
func (b *Boot) undoFsck(dev BlockDev, problem error) error {
	msg, err := b.Sys.UndoFsck(dev.Path(), true)
	if err != nil {
		b.dataChanged = true
		w := fmt.Sprintf("the failed repair CHANGED data partition %s and undoing it failed: %v", dev, err)
		b.Warnf("%s", w)
		b.state.Warnings = append(b.state.Warnings, w)
		return problem
	}
	b.Warnf("%v; rolled back: %s", problem, msg)
	return problem
}

// keepFsckChanges forgets the undo files of a repair or replay that ended
// in a mounted filesystem.
func (b *Boot) keepFsckChanges(dev BlockDev) {
	if _, err := b.Sys.UndoFsck(dev.Path(), false); err != nil {
		b.Warnf("forget the undo files of %s: %v", dev, err)
	}
}

func (b *Boot) format(dev BlockDev) error {
	fstype := b.cfg.DataFSType
	t := b.now()
	// The whole partition, already grown to the disk when it is the last
	// one: the format writes tens of KiB whatever the size, and a
	// filesystem made at its size gets mke2fs's block size and journal
	// size for it (one made small and grown online keeps both).
	if err := b.Sys.Format(dev.Path(), fstype, b.cfg.DataLabel, 0); err != nil {
		return fmt.Errorf("format %s as %s: %w", dev, fstype, err)
	}
	b.state.Formatted = true
	b.Logf("formatted %s as %s in %d ms", dev.Path(), fstype, ms(b.now().Sub(t)))
	return nil
}

func (b *Boot) mountDataFS(dev BlockDev) error {
	fstype := b.cfg.DataFSType
	b.mkdir(layout.OverlayDir)
	if err := b.Sys.Mount(dev.Path(), layout.OverlayDir, fstype, unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount data %s on %s: %w", dev, layout.OverlayDir, err)
	}
	b.Logf("mounted %s (%s, rw) on %s", dev.Path(), fstype, layout.OverlayDir)
	return nil
}

// readOnly reports whether the kernel marks dev read-only (a
// write-protected SD card or eMMC boot area, a disk attached read-only):
// /sys/class/block/NAME/ro, which for a partition includes its disk's.
func (b *Boot) readOnly(dev BlockDev) bool {
	data, err := os.ReadFile(b.path("/sys/class/block/" + dev.Name + "/ro"))
	return err == nil && strings.TrimSpace(string(data)) == "1"
}
