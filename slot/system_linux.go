package slot

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// System is the running device as the on-device half of this package sees
// it: every path under Root ("" is "/": /sys, /dev, /run, /overlay) and
// the boot partition mounted through Mounter. Tests point Root at a temp
// dir where the "boot partition" is a directory at ESPMountDir and the
// root partitions are regular files under dev/.
type System struct {
	Root    string
	Mounter Mounter
	// Progress receives the upgrade's progress lines (ovrootctl: stderr);
	// nil discards them.
	Progress io.Writer
	Now      func() time.Time
	// HealthTimeout is how long one health check may run (0:
	// DefaultHealthTimeout).
	HealthTimeout time.Duration

	// cut simulates a power cut in tests: it counts each write and each
	// step (fsync, rename, remove) and panics at the chosen one, after
	// half of that write.
	cut *powerCut
}

// Mounter mounts the boot partition; LinuxMounter is the real one.
type Mounter interface {
	MountESP(dev, dir string, readWrite bool) error
	Unmount(dir string) error
}

// espMountOptions name the codepage and charset explicitly, so the mount
// needs exactly the modules a two-slot initramfs carries (vfat, fat,
// nls_cp437, nls_ascii) whatever the kernel's FAT defaults are; the
// scheme's names are ASCII.
const espMountOptions = "codepage=437,iocharset=ascii"

// LinuxMounter mounts with mount(2).
type LinuxMounter struct{}

// MountESP mounts dev (vfat) on dir, read-only unless readWrite.
func (LinuxMounter) MountESP(dev, dir string, readWrite bool) error {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	mode := "rw"
	if !readWrite {
		flags |= unix.MS_RDONLY
		mode = "ro"
	}
	if err := unix.Mount(dev, dir, "vfat", flags, espMountOptions); err != nil {
		return &os.PathError{Op: "mount vfat " + mode + "," + espMountOptions + " on " + dir, Path: dev, Err: err}
	}
	return nil
}

// Unmount unmounts dir.
func (LinuxMounter) Unmount(dir string) error {
	if err := unix.Unmount(dir, 0); err != nil {
		return &os.PathError{Op: "unmount", Path: dir, Err: err}
	}
	return nil
}

func (s *System) path(p string) string {
	if s.Root == "" {
		return p
	}
	return filepath.Join(s.Root, p)
}

func (s *System) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// ErrNotSlotted is returned for a boot of a one-slot image.
var ErrNotSlotted = errors.New("this system was not booted from a two-slot image (no slot in " + layout.StateFile + "): it has no second root to upgrade or confirm")

// ReadState reads the init's record of this boot.
func (s *System) ReadState() (layout.State, error) {
	data, err := os.ReadFile(s.path(layout.StateFile))
	if err != nil {
		return layout.State{}, fmt.Errorf("no boot record (%w): was this system booted by ovroot's init?", err)
	}
	return layout.ParseState(data)
}

// Partition is a block device partition with a GPT PARTLABEL.
type Partition struct {
	Name  string // kernel name: vda2
	Label string // PARTLABEL
	Disk  string // the whole disk it is on: vda
}

// Dev is the partition's device node.
func (p Partition) Dev() string { return "/dev/" + p.Name }

// Partitions lists the partitions the kernel knows, from
// /sys/class/block/*/uevent (DEVTYPE=partition, PARTNAME=label).
func (s *System) Partitions() ([]Partition, error) {
	dir := s.path("/sys/class/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var out []Partition
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "uevent"))
		if err != nil {
			continue
		}
		u := parseUevent(data)
		if u["DEVTYPE"] != "partition" || u["PARTNAME"] == "" {
			continue
		}
		p := Partition{Name: e.Name(), Label: u["PARTNAME"]}
		// /sys/class/block/vda2 -> ../../devices/.../block/vda/vda2
		if real, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name())); err == nil {
			p.Disk = filepath.Base(filepath.Dir(real))
		}
		out = append(out, p)
	}
	return out, nil
}

func parseUevent(data []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

// device is the running slotted system: its boot record, and the boot
// partition and both root partitions on the disk it booted from.
type device struct {
	state layout.State
	slot  layout.Slot // running
	esp   Partition
	roots map[layout.Slot]Partition
}

// findDevice finds the partitions of the running system by label on the
// disk of its root device, so a second disk carrying another ovroot image
// (or the bundle) is never touched.
func (s *System) findDevice() (device, error) {
	st, err := s.ReadState()
	if err != nil {
		return device{}, err
	}
	if st.Slot == nil || !st.Slot.Slot.Valid() {
		return device{}, ErrNotSlotted
	}
	d := device{state: st, slot: st.Slot.Slot, roots: map[layout.Slot]Partition{}}
	parts, err := s.Partitions()
	if err != nil {
		return d, err
	}
	rootName := filepath.Base(st.RootDevice)
	var root *Partition
	for i := range parts {
		if parts[i].Name == rootName {
			root = &parts[i]
		}
	}
	if root == nil {
		return d, fmt.Errorf("root device %s (from %s) is not a partition with a label in /sys/class/block", st.RootDevice, layout.StateFile)
	}
	base, ok := strings.CutSuffix(root.Label, "_"+string(d.slot))
	if !ok {
		return d, fmt.Errorf("root device %s is labelled %q, not the label of slot %s (<base>_%s)", st.RootDevice, root.Label, d.slot, d.slot)
	}
	for _, p := range parts {
		if p.Disk != root.Disk {
			continue
		}
		switch p.Label {
		case layout.BootLabel:
			d.esp = p
		case layout.SlotA.Label(base):
			d.roots[layout.SlotA] = p
		case layout.SlotB.Label(base):
			d.roots[layout.SlotB] = p
		}
	}
	if d.esp.Name == "" {
		return d, fmt.Errorf("no partition labelled %s on %s, the disk of the root %s", layout.BootLabel, root.Disk, st.RootDevice)
	}
	other := d.slot.Other()
	if _, ok := d.roots[other]; !ok {
		return d, fmt.Errorf("no partition labelled %s on %s for slot %s", other.Label(base), root.Disk, other)
	}
	return d, nil
}

// esp is the boot partition, mounted at ESPMountDir while a change or a
// read is under way.
type esp struct {
	dir  string
	lock *os.File
}

// mountESP takes the ESP lock (ovrootctl and the init's confirmer may run
// at once) and mounts the boot partition. close unmounts and unlocks.
func (s *System) mountESP(d device, readWrite bool) (*esp, error) {
	if s.Mounter == nil {
		return nil, errors.New("no mounter for the boot partition")
	}
	run := s.path(layout.RunDir)
	if err := os.MkdirAll(run, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(run, "esp.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the boot partition: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("lock the boot partition: %w", err)
	}
	dir := s.path(layout.ESPMountDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		lock.Close()
		return nil, err
	}
	if err := s.Mounter.MountESP(s.path(d.esp.Dev()), dir, readWrite); err != nil {
		lock.Close()
		return nil, fmt.Errorf("mount the boot partition %s (%s): %w", d.esp.Dev(), layout.BootLabel, err)
	}
	return &esp{dir: dir, lock: lock}, nil
}

func (s *System) closeESP(e *esp) error {
	err := s.Mounter.Unmount(e.dir)
	e.lock.Close()
	if err != nil {
		return fmt.Errorf("unmount the boot partition: %w", err)
	}
	return nil
}

func (e *esp) entriesDir() string { return filepath.Join(e.dir, layout.EntriesDir) }

// SlotEntry is one entry file of the scheme on the boot partition: a
// Boot Loader Spec file (UEFI), or a U-Boot entry file whose Name carries
// the counter its markers make.
type SlotEntry struct {
	File  string // file name in loader/entries
	Name  Name
	Entry Entry
	Err   error // the file could not be read or parsed
}

// ListEntries reads the scheme's entries in dir/loader/entries, sorted by
// file name; other files (other systems' entries, temporary files,
// markers) are skipped.
func ListEntries(dir string) ([]SlotEntry, error) {
	edir := filepath.Join(dir, layout.EntriesDir)
	ents, err := os.ReadDir(edir)
	if err != nil {
		return nil, fmt.Errorf("read the boot entries: %w", err)
	}
	markers := markersIn(ents)
	var out []SlotEntry
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		n, bls := ParseName(e.Name())
		sl, env := ParseEnvName(e.Name())
		if !bls && !env {
			continue
		}
		se := SlotEntry{File: e.Name(), Name: n}
		data, err := os.ReadFile(filepath.Join(edir, e.Name()))
		if bls && err == nil {
			se.Entry, err = ParseEntry(string(data))
		}
		if env {
			// U-Boot: the markers in a row from 1 are the tries used, as
			// boot.scr counts them.
			se.Name = Name{Slot: sl}
			var tries int
			if err == nil {
				se.Entry, tries, err = ParseEnv(string(data))
			}
			if tries > 0 {
				done := 0
				for done < tries && markers[sl][done+1] {
					done++
				}
				se.Name = Name{Slot: sl, Counted: true, Left: tries - done, Done: done}
			}
		}
		if err == nil && se.Entry.Slot != se.Name.Slot {
			err = fmt.Errorf("boots slot %s", se.Entry.Slot)
		}
		if err != nil {
			se.Err = fmt.Errorf("entry %s: %w", e.Name(), err)
		}
		out = append(out, se)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out, nil
}

// markersIn finds the U-Boot boot markers among a directory's files.
func markersIn(ents []os.DirEntry) map[layout.Slot]map[int]bool {
	out := map[layout.Slot]map[int]bool{}
	for _, e := range ents {
		if sl, n, ok := ParseMarker(e.Name()); ok {
			if out[sl] == nil {
				out[sl] = map[int]bool{}
			}
			out[sl][n] = true
		}
	}
	return out
}

// removeMarkers removes slot sl's boot markers (U-Boot images; none
// elsewhere).
func (s *System) removeMarkers(dir string, sl layout.Slot) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if msl, _, ok := ParseMarker(e.Name()); ok && msl == sl {
			if err := s.removeFile(dir, e.Name()); err != nil {
				return fmt.Errorf("remove slot %s's boot marker %s: %w", sl, e.Name(), err)
			}
		}
	}
	return nil
}

// ofSlot returns the entries of slot s.
func ofSlot(ents []SlotEntry, s layout.Slot) []SlotEntry {
	var out []SlotEntry
	for _, e := range ents {
		if e.Name.Slot == s {
			out = append(out, e)
		}
	}
	return out
}

// powerCut is the tests' power cut: event number at (1-based) stops the
// sequence.
type powerCut struct{ at, n int }

var errPowerCut = errors.New("simulated power cut")

// step marks a point between two durable operations.
func (s *System) step() {
	if c := s.cut; c != nil {
		if c.n++; c.n == c.at {
			panic(errPowerCut)
		}
	}
}

// writer wraps w so every write can be cut half way in tests.
func (s *System) writer(w io.Writer) io.Writer {
	if s.cut == nil {
		return w
	}
	return cutWriter{s, w}
}

type cutWriter struct {
	s *System
	w io.Writer
}

func (c cutWriter) Write(p []byte) (int, error) {
	if c.s.cut.n++; c.s.cut.n == c.s.cut.at {
		c.w.Write(p[:len(p)/2])
		panic(errPowerCut)
	}
	return c.w.Write(p)
}

// replaceFile replaces dir/name crash-safely: the bytes go to name.tmp
// (never *.conf, so the loader never sees a partial entry), which is
// synced, checked by check (if not nil) from a fresh read, renamed over
// name, and the directory synced. After a power cut dir holds the old
// name or the new one, complete.
func (s *System) replaceFile(dir, name string, write func(io.Writer) error, check func(path string) error) error {
	final := filepath.Join(dir, name)
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	err = write(s.writer(f))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && check != nil {
		err = check(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", final, err)
	}
	s.step()
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, name, err)
	}
	s.step()
	return syncDir(dir)
}

// replaceText is replaceFile for an entry's text.
func (s *System) replaceText(dir, name, text string) error {
	return s.replaceFile(dir, name, func(w io.Writer) error {
		_, err := io.WriteString(w, text)
		return err
	}, nil)
}

// removeFile removes dir/name and syncs dir.
func (s *System) removeFile(dir, name string) error {
	if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.step()
	return syncDir(dir)
}

// renameFile renames dir/from to dir/to and syncs dir.
func (s *System) renameFile(dir, from, to string) error {
	if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
		return err
	}
	s.step()
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// slotLog is MetaDir/SlotLogFile on the mounted data partition.
func (s *System) slotLog() string { return layout.Meta(s.path(layout.OverlayDir), layout.SlotLogFile) }

// appendEvent adds one line to the slot log and syncs it. The log lives on
// the data partition: a volatile or failsafe boot has none to write.
func (s *System) appendEvent(st layout.State, ev layout.SlotEvent) error {
	if st.Mode != layout.ModePersistent {
		return fmt.Errorf("the data partition is not in use (%s): the slot log is not written", st.Mode)
	}
	return AppendEvent(s.path(layout.OverlayDir), ev)
}

// AppendEvent adds one line to the slot log of the data filesystem
// mounted at dir (MetaDir/SlotLogFile) and syncs it; the init records a
// failed trial boot with it too.
func AppendEvent(dir string, ev layout.SlotEvent) error {
	p := layout.Meta(dir, layout.SlotLogFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	line, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", p, err)
	}
	return nil
}

// ReadEvents reads the slot log (see ParseEvents). No log is no events.
func ReadEvents(path string) ([]layout.SlotEvent, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseEvents(data), nil
}
