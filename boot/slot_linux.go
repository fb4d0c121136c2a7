package boot

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf16"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
	"github.com/ovroot/ovroot/slot"
	"golang.org/x/sys/unix"
)

// The A/B side of the boot: which slot's root to mount, whether the
// loader booted it on trial, what the trial's failure does, and the build
// the upper was made on. See package slot for the scheme.

const (
	efivarsDir = "/sys/firmware/efi/efivars"
	// bootCountVar is systemd-boot's LoaderBootCountPath: set when it
	// booted a counted entry, to the path it renamed the entry to.
	bootCountVar = "LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
)

// rootLabel is the PARTLABEL of the root this boot mounts: the slot's
// (rootfs_b) when the entry names one.
func (b *Boot) rootLabel() string {
	if b.cmdline.Slot != "" {
		return b.cmdline.Slot.Label(b.cfg.RootLabel)
	}
	return b.cfg.RootLabel
}

// readSlot records the slot the entry booted and whether it is on trial.
func (b *Boot) readSlot() {
	if b.cmdline.Slot == "" {
		return
	}
	st := &layout.SlotState{Slot: b.cmdline.Slot, BuildID: b.cmdline.BuildID}
	st.Trial = b.readTrial()
	b.state.Slot = st
	if st.Trial != nil {
		b.Logf("slot %s (build %s) on trial: %d tries left after this one, %d done (%s)", st.Slot, st.BuildID, st.Trial.Left, st.Trial.Done, st.Trial.Entry)
		return
	}
	b.Logf("slot %s (build %s)", st.Slot, st.BuildID)
}

// readTrial tells a trial boot: U-Boot's boot script says so with
// ovroot.try=; systemd-boot with LoaderBootCountPath, when that names a
// counted entry of this slot. No EFI, no efivarfs or no variable: not a
// trial (a confirmed entry, or a loader that does not count).
func (b *Boot) readTrial() *layout.Trial {
	if c := b.cmdline; c.TryOf > 0 {
		return &layout.Trial{Entry: layout.EntriesDir + "/" + slot.EnvFileName(c.Slot), Left: c.TryOf - c.TryDone, Done: c.TryDone}
	}
	if _, err := os.Stat(b.path("/sys/firmware/efi")); err != nil {
		return nil
	}
	p := b.path(filepath.Join(efivarsDir, bootCountVar))
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		err := b.Sys.Mount("efivarfs", efivarsDir, "efivarfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		if err != nil && !errors.Is(err, unix.EBUSY) {
			b.Warnf("mount efivarfs on %s: %v (cannot tell a trial boot)", efivarsDir, err)
			return nil
		}
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		b.Warnf("read %s: %v (cannot tell a trial boot)", bootCountVar, err)
		return nil
	}
	path := efiString(data)
	path = strings.ReplaceAll(path, `\`, "/")
	n, ok := slot.ParseName(filepath.Base(path))
	switch {
	case !ok || !n.Counted:
		return nil
	case n.Slot != b.cmdline.Slot:
		b.Warnf("the loader counted %s, but the entry booted slot %s: not a trial of this slot", path, b.cmdline.Slot)
		return nil
	}
	return &layout.Trial{Entry: strings.TrimPrefix(path, "/"), Left: n.Left, Done: n.Done}
}

// efiString decodes an efivarfs file holding a string variable: 4 bytes
// of attributes, then UTF-16LE up to a NUL.
func efiString(data []byte) string {
	if len(data) < 4 {
		return ""
	}
	data = data[4:]
	u := make([]uint16, 0, len(data)/2)
	for i := 0; i+1 < len(data); i += 2 {
		c := binary.LittleEndian.Uint16(data[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// InTrial reports whether the last attempt booted a slot on trial: its
// failure must reboot (FailTrial), so the loader counts the try and falls
// back when none are left, instead of stopping in the emergency shell.
func (b *Boot) InTrial() bool { return b.state.Slot != nil && b.state.Slot.Trial != nil }

// FailTrial ends a trial boot that built no root: it says why on the
// console, records it in the data partition's slot log (best effort: the
// partition may be what failed) and reboots. It returns only when the
// reboot failed.
func (b *Boot) FailTrial(cause error) {
	st := b.state.Slot
	b.Warnf("trial boot of slot %s (build %s) failed: %v; rebooting so the loader counts it (%d tries left)", st.Slot, st.BuildID, cause, st.Trial.Left)
	b.logSlotEvent(layout.SlotEvent{Time: b.now().UTC(), Slot: st.Slot, BuildID: st.BuildID, Event: "trial-failed", Reason: cause.Error()})
	b.reboot()
}

// GiveUpSlot handles a confirmed slot whose root failed its integrity
// check at boot (IntegrityError): when the other slot is confirmed, the
// running slot's entry is made one with no tries left (slot.Abandon), the
// reason goes to the slot log for ovrootctl status, and the machine
// reboots into the other slot. It returns (and the caller stops in the
// emergency shell, as a one-slot image does) for any other failure, a
// trial boot (FailTrial's), no confirmed other slot, or a failed write.
func (b *Boot) GiveUpSlot(cause error) {
	var ie *IntegrityError
	st := b.state.Slot
	if st == nil || st.Trial != nil || !errors.As(cause, &ie) {
		return
	}
	other := st.Slot.Other()
	// slot.System finds the disk from the state record, as ovrootctl does.
	b.writeState()
	m := b.ESPMounter
	if m == nil {
		m = slot.LinuxMounter{}
	}
	sys := &slot.System{Root: b.Root, Mounter: m, Now: b.Now}
	b.logSlotEvent(layout.SlotEvent{Time: b.now().UTC(), Slot: st.Slot, BuildID: st.BuildID, Event: slot.EventGivenUp, Reason: cause.Error()})
	res, err := sys.Abandon()
	if err != nil {
		b.Warnf("cannot give up the damaged slot %s for slot %s: %v", st.Slot, other, err)
		return
	}
	b.Warnf("slot %s (build %s) is damaged: given up (%s is now %s); rebooting into slot %s", st.Slot, st.BuildID, res.From, res.To, other)
	b.reboot()
}

// reboot syncs and restarts the machine (b.Reboot in tests); it returns
// only when that failed.
func (b *Boot) reboot() {
	reboot := b.Reboot
	if reboot == nil {
		reboot = func() error {
			unix.Sync()
			return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		}
	}
	if err := reboot(); err != nil {
		b.Warnf("reboot: %v", err)
	}
}

// logSlotEvent appends ev to the slot log on the data partition, mounting
// it for the write when it is not mounted.
func (b *Boot) logSlotEvent(ev layout.SlotEvent) {
	dev := b.state.DataDevice
	if dev == "" {
		return
	}
	b.mkdir(layout.OverlayDir)
	err := b.Sys.Mount(dev, layout.OverlayDir, b.cfg.DataFSType, unix.MS_NOATIME, "")
	mounted := err == nil
	if err != nil && !errors.Is(err, unix.EBUSY) {
		b.Warnf("slot log: mount %s: %v (not recorded)", dev, err)
		return
	}
	if mounted {
		defer b.Sys.Unmount(layout.OverlayDir)
	}
	if err := slot.AppendEvent(b.path(layout.OverlayDir), ev); err != nil {
		b.Warnf("slot log: %v (not recorded)", err)
	}
}

// recordUpperBuild keeps MetaDir/UpperBuildFile: the build the upper was
// made on. A new upper (a formatted partition, a factory reset) or a
// partition without the record gets this boot's build; otherwise the
// record says whether the upper was made on another build (an upgrade
// kept it), which ovrootctl status shows.
func (b *Boot) recordUpperBuild() {
	st := b.state.Slot
	if st == nil || st.BuildID == "" {
		return
	}
	meta := b.path(filepath.Join(layout.OverlayDir, layout.MetaDir))
	fresh := b.state.Formatted || b.state.Reset != nil
	if data, err := os.ReadFile(filepath.Join(meta, layout.UpperBuildFile)); err == nil && !fresh {
		var rec layout.UpperBuild
		if err := json.Unmarshal(data, &rec); err == nil && rec.BuildID != "" {
			st.UpperBuild = rec.BuildID
			st.UpperOtherBuild = rec.BuildID != st.BuildID
			if st.UpperOtherBuild {
				b.Logf("the upper was made on build %s (slot %s); this root is build %s", rec.BuildID, rec.Slot, st.BuildID)
			}
			return
		}
		b.Warnf("%s: unreadable record, replaced", layout.UpperBuildFile)
	}
	data, _ := json.Marshal(layout.UpperBuild{BuildID: st.BuildID, Slot: st.Slot, Time: b.now().UTC()})
	if err := os.MkdirAll(meta, 0o755); err == nil {
		err = reset.WriteAtomic(meta, layout.UpperBuildFile, append(data, '\n'))
		if err != nil {
			b.Warnf("record the upper's build: %v", err)
			return
		}
	}
	st.UpperBuild = st.BuildID
}
