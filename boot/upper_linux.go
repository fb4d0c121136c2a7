package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// Where the overlay's upper lives, decided in one place (mountRoot): on the
// data partition (persistent), on a tmpfs because the data partition cannot
// be used (volatile), or on a tmpfs because a person asked for the factory
// root (failsafe).

// mountRoot readies the upper and stacks the overlay root at NewRootDir,
// falling back to a volatile upper when the data partition cannot be used.
// It fails only when not even a tmpfs upper gives an overlay.
func (b *Boot) mountRoot(data *BlockDev) error {
	persistent := false
	switch {
	case b.failsafe != "":
		b.goFailsafe(data)
	case data == nil:
		b.goVolatile(fmt.Sprintf("no partition labelled %s", b.cfg.DataLabel))
	default:
		if err := b.usePersistent(*data); err != nil {
			b.goVolatile(err.Error())
		} else {
			persistent = true
		}
	}
	b.trace("data")
	if !persistent && b.resetTrigger != "" {
		b.Warnf("factory reset (trigger=%s) not stored: the data partition is not in use; this boot starts from the factory root anyway", b.resetTrigger)
		b.state.Warnings = append(b.state.Warnings, fmt.Sprintf("a factory reset was asked for (%s) but could not be done or stored: the data partition is not in use", b.resetTrigger))
	}
	err := b.mountOverlay()
	if err != nil && persistent {
		b.Sys.Unmount(layout.OverlayDir)
		b.goVolatile(err.Error())
		persistent = false
		err = b.mountOverlay()
	}
	if err != nil {
		return err
	}
	b.trace("overlay")
	if persistent {
		b.recordUpperBuild()
		b.collectTrash()
		b.noteDataErrors(*data)
		b.trace("upkeep")
	}
	return nil
}

// noteDataErrors records the data filesystem's error count as the boot
// leaves it, so ovrootctl status can tell errors of the running system
// (a write the storage failed, after which ext4 stops writing) from ones
// recorded on earlier boots.
func (b *Boot) noteDataErrors(data BlockDev) {
	raw, err := os.ReadFile(b.path(filepath.Join(layout.Ext4Sysfs(data.Name), "errors_count")))
	if err != nil {
		return // not ext4, or a kernel without the attribute
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil {
		b.state.DataErrorsAtBoot = &n
	}
}

// usePersistent mounts the data partition at /overlay and readies it for
// the upper: a pending factory reset, then room to write. On an error
// nothing is left mounted at /overlay. Formatting and resetting run code
// on what the partition holds, so a panic in them is an error here too.
func (b *Boot) usePersistent(data BlockDev) error {
	err := b.guard("mount the data partition", func() error { return b.mountData(data) })
	if err == nil {
		b.growDataFS(data)
		err = b.guard("factory reset", b.factoryReset)
	}
	if err != nil {
		b.Sys.Unmount(layout.OverlayDir)
		return err
	}
	b.keepHeadroom()
	return nil
}

// askForFailsafe notes failsafe mode asked for on the kernel command line
// or, when configured, on the console.
func (b *Boot) askForFailsafe() {
	b.failsafe = ""
	if b.cmdline.Failsafe {
		b.failsafe = "ovroot.failsafe on the kernel command line"
		return
	}
	b.watchFailsafeKey()
}

// watchFailsafeKey offers failsafe mode on the console for the configured
// window (off by default), as OpenWRT's preinit does.
func (b *Boot) watchFailsafeKey() {
	w := b.cfg.FailsafeWindow.D()
	if w <= 0 {
		return
	}
	b.Logf("press f and Enter within %s for failsafe mode", w)
	line, err := b.Sys.ReadConsoleLine(w)
	if err != nil {
		b.Warnf("failsafe prompt: %v", err)
		return
	}
	if strings.TrimSpace(line) == "f" {
		b.failsafe = "f pressed on the console"
	}
}

// goFailsafe boots the factory root with a tmpfs upper and, for rescue,
// the data partition read-only at /overlay (when it holds the data
// filesystem): nothing on it is formatted, repaired, reset or changed.
func (b *Boot) goFailsafe(data *BlockDev) {
	b.state.Mode = layout.ModeFailsafe
	b.state.Reason = b.failsafe
	b.Warnf("**********************************************************")
	b.Warnf("FAILSAFE: %s", b.failsafe)
	b.Warnf("factory root with a RAM upper; data partition read-only at %s", layout.OverlayDir)
	b.Warnf("**********************************************************")
	b.mkdir(layout.OverlayDir)
	if data == nil {
		b.Warnf("failsafe: no partition labelled %s to mount for rescue", b.cfg.DataLabel)
		return
	}
	content, err := b.Sys.Probe(data.Path())
	if err != nil || content != Content(b.cfg.DataFSType) {
		b.Warnf("failsafe: data partition %s not mounted (holds %s content, %v)", data, content, err)
		return
	}
	if err := b.Sys.Mount(data.Path(), layout.OverlayDir, b.cfg.DataFSType, unix.MS_RDONLY|unix.MS_NOATIME, ""); err != nil {
		b.Warnf("failsafe: mount %s read-only on %s: %v", data, layout.OverlayDir, err)
		return
	}
	b.state.DataDevice = data.Path()
	b.Logf("failsafe: mounted %s (%s, ro) on %s", data.Path(), b.cfg.DataFSType, layout.OverlayDir)
}

// upperDirs are the overlay's upper and work directories: on /overlay,
// except in failsafe mode, where they are on the /run tmpfs.
func (b *Boot) upperDirs() (upper, work string) {
	base := layout.OverlayDir
	if b.state.Mode == layout.ModeFailsafe {
		base = layout.FailsafeDir
	}
	return filepath.Join(base, layout.UpperName), filepath.Join(base, layout.WorkName)
}

// goVolatile puts a tmpfs at /overlay: the device boots, but nothing written
// survives a power-off. Said loudly, and recorded for ovrootctl status.
func (b *Boot) goVolatile(reason string) {
	b.state.Mode = layout.ModeVolatile
	b.state.Reason = reason
	b.Warnf("**********************************************************")
	b.Warnf("VOLATILE: %s", reason)
	b.Warnf("changes made on this boot will be LOST at power-off")
	b.Warnf("**********************************************************")
	b.mkdir(layout.OverlayDir)
	if err := b.Sys.Mount("tmpfs", layout.OverlayDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		b.Warnf("mount tmpfs on %s: %v", layout.OverlayDir, err)
	}
}
