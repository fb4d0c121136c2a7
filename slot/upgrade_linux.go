package slot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// ImageInfo is what a device reads from the boot partition's ovroot.json
// (the image as built, never changed on the device): the facts a bundle
// must match.
type ImageInfo struct {
	Arch   layout.Arch   `json:"arch"`
	Loader layout.Loader `json:"loader"`
	Board  string        `json:"board"`
}

// DefaultBoard is the board of an image that names none.
const DefaultBoard = "generic"

func readImageInfo(espDir string) (ImageInfo, error) {
	var info ImageInfo
	data, err := os.ReadFile(filepath.Join(espDir, layout.BootInfoFile))
	if err != nil {
		return info, fmt.Errorf("read the image's %s on the boot partition: %w", layout.BootInfoFile, err)
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, fmt.Errorf("parse %s on the boot partition: %w", layout.BootInfoFile, err)
	}
	if info.Board == "" {
		info.Board = DefaultBoard
	}
	return info, nil
}

// UpgradeResult says what Upgrade did.
type UpgradeResult struct {
	Slot       layout.Slot // the slot written
	BuildID    string
	Tries      int
	Generation int
	Entry      string // the new entry's file name
	Version    string // the bundle's release version
	Signer     string // the id of the key that signed it ("" unsigned)
	Warning    string // the upgrade stands, but something was not recorded
}

// UpgradeOptions are what `ovrootctl upgrade` asks for.
type UpgradeOptions struct {
	// AllowDowngrade installs an older version, if the running image
	// allows downgrades at all ([update] allow_downgrade).
	AllowDowngrade bool
}

// BundleSource is where Upgrade reads a bundle. Upgrade opens it twice:
// once to check every byte before anything changes, once to write them
// (checked again as they are written), so it must give the same bytes
// each time: a file, a block device or a URL, not a pipe. Name is what
// messages call it (a path or a URL).
type BundleSource struct {
	Name string
	Open func() (io.ReadCloser, error)
}

// FileBundle is the bundle in a file or on a block device. It refuses a
// pipe, a socket or a character device before anything changes: the
// second read would find nothing (or other bytes) there.
func FileBundle(path string) BundleSource {
	return BundleSource{Name: path, Open: func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("open the bundle: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("open the bundle: %w", err)
		}
		if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
			f.Close()
			return nil, fmt.Errorf("%s is not a file or a block device (%s): upgrade reads a bundle twice, once to check it and once to write it; copy it to a file or give its URL", path, m.Type())
		}
		return f, nil
	}}
}

// Upgrade is UpgradeFrom(FileBundle(path), o).
func (s *System) Upgrade(path string, o UpgradeOptions) (UpgradeResult, error) {
	return s.UpgradeFrom(FileBundle(path), o)
}

// UpgradeFrom writes the bundle src to the slot that is not running and
// adds its entry on trial, so the next boot tries it. Nothing changes
// unless the bundle is signed by a key the running root trusts (or the
// root allows unsigned bundles), is not older than the running root or
// any version the device confirmed, is for this device, and every member
// matches its checksum; after that, the order is what keeps a power cut
// (or a read error) harmless: the slot's old entry goes first, its root
// and boot files are written and read back, and only then does its new
// entry appear.
func (s *System) UpgradeFrom(src BundleSource, o UpgradeOptions) (UpgradeResult, error) {
	d, err := s.findDevice()
	if err != nil {
		return UpgradeResult{}, err
	}
	other := d.slot.Other()
	res := UpgradeResult{Slot: other}
	e, err := s.mountESP(d, true)
	if err != nil {
		return res, err
	}
	err = s.upgrade(d, e, src, o, &res)
	if cerr := s.closeESP(e); err == nil {
		err = cerr
	}
	if err != nil {
		return res, err
	}
	// The running slot is confirmed (runningConfirmed): so is its version.
	// A factory image is never on trial, so this is where its version is
	// first recorded; a refused upgrade records nothing.
	if err := s.recordConfirmed(d.state); err != nil {
		res.Warning = joinWarning(res.Warning, err.Error())
	}
	ev := layout.SlotEvent{Time: s.now().UTC(), Slot: other, BuildID: res.BuildID, Event: "upgraded"}
	if err := s.appendEvent(d.state, ev); err != nil {
		res.Warning = joinWarning(res.Warning, err.Error())
	}
	return res, nil
}

func joinWarning(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func (s *System) upgrade(d device, e *esp, src BundleSource, o UpgradeOptions, res *UpgradeResult) error {
	path := src.Name
	other := d.slot.Other()
	part := d.roots[other]
	ents, err := ListEntries(e.dir)
	if err != nil {
		return err
	}
	if err := runningConfirmed(d, ents); err != nil {
		return err
	}
	info, err := readImageInfo(e.dir)
	if err != nil {
		return err
	}
	pol, err := s.Policy()
	if err != nil {
		return err
	}

	bundle, err := src.Open()
	if err != nil {
		return fmt.Errorf("%w (nothing was changed)", err)
	}
	defer func() { bundle.Close() }()
	br, err := NewReader(bundle, pol.Trust)
	if err != nil {
		return fmt.Errorf("%s: %w (nothing was changed)", path, err)
	}
	m := br.Manifest
	if err := checkFits(m, info); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	warn, err := checkVersion(m.Version, pol, o.AllowDowngrade)
	if err != nil {
		return fmt.Errorf("%s: %w (nothing was changed)", path, err)
	}
	res.Warning = joinWarning(res.Warning, warn)
	dev, err := os.OpenFile(s.path(part.Dev()), os.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("open slot %s's partition %s (%s): %w", other, part.Dev(), part.Label, err)
	}
	defer dev.Close()
	size, err := dev.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("size of %s: %w", part.Dev(), err)
	}
	root, _ := m.File(RootName)
	if root.Size > size {
		return fmt.Errorf("%s: the root is %d MiB, slot %s's partition %s holds %d MiB", path, mib(root.Size), other, part.Dev(), mib(size))
	}
	if err := bootFilesFit(e.dir, other, m); err != nil {
		return err
	}
	// Pass 1: every byte against the manifest, before anything changes.
	if err := drain(br); err != nil {
		return fmt.Errorf("%s: %w (nothing was changed)", path, err)
	}

	// From here on the device changes. The slot's old entry goes first:
	// from now until its new entry appears the slot does not boot.
	for _, se := range ofSlot(ents, other) {
		if err := s.removeFile(e.entriesDir(), se.File); err != nil {
			return fmt.Errorf("remove slot %s's entry %s: %w", other, se.File, err)
		}
	}
	// Then what U-Boot counted of the slot's last trial.
	if err := s.removeMarkers(e.entriesDir(), other); err != nil {
		return err
	}

	// Pass 2: the same bytes, checked again as they are written.
	bundle.Close()
	again, err := src.Open()
	if err != nil {
		return halfWritten(path, other, fmt.Errorf("read the bundle again: %w", err))
	}
	bundle = again
	br2, err := NewReader(bundle, pol.Trust)
	if err != nil {
		return halfWritten(path, other, fmt.Errorf("second read: %w", err))
	}
	if !bytes.Equal(br.Raw, br2.Raw) {
		return halfWritten(path, other, errors.New("the bundle changed between the check and the write"))
	}
	if err := s.writeRoot(br2, dev, other, part, root); err != nil {
		return halfWritten(path, other, err)
	}
	if err := s.writeBootFiles(br2, e.dir, other); err != nil {
		return halfWritten(path, other, err)
	}

	gen := 0
	for _, se := range ents {
		if se.Err == nil && se.Entry.Generation > gen {
			gen = se.Entry.Generation
		}
	}
	ent := Entry{Slot: other, Generation: gen + 1, BuildID: m.BuildID, Options: m.Cmdline, Loader: m.Loader, Release: m.KernelRelease}
	name, text := Name{Slot: other, Counted: true, Left: m.Tries}.FileName(), ent.Text()
	if info.Loader == layout.LoaderUBoot {
		name, text = EnvFileName(other), ent.Env(m.Tries)
	}
	if err := s.replaceText(e.entriesDir(), name, text); err != nil {
		return fmt.Errorf("add slot %s's entry: %w", other, err)
	}
	*res = UpgradeResult{Slot: other, BuildID: m.BuildID, Tries: m.Tries, Generation: ent.Generation, Entry: name,
		Version: m.Version, Signer: br.Signer, Warning: res.Warning}
	return nil
}

// halfWritten is an error after the slot's entry was removed: the device
// stays on its running slot, as after a power cut.
func halfWritten(path string, slot layout.Slot, err error) error {
	return fmt.Errorf("%s: %w (slot %s is left without a boot entry, the running slot is untouched: run the upgrade again)", path, err, slot)
}

// runningConfirmed refuses an upgrade while the running slot is on trial:
// the other slot is then its only fallback, and an upgrade would take it
// away.
func runningConfirmed(d device, ents []SlotEntry) error {
	mine := ofSlot(ents, d.slot)
	if len(mine) == 0 {
		return fmt.Errorf("the running slot %s has no boot entry in %s: refusing to replace the other slot, the only one that boots", d.slot, layout.EntriesDir)
	}
	for _, se := range mine {
		if !se.Name.Counted {
			return nil
		}
	}
	return fmt.Errorf("the running slot %s is on trial (%s): confirm it with `ovrootctl mark-good` first; until then slot %s is its fallback", d.slot, mine[0].File, d.slot.Other())
}

// checkFits refuses a bundle made for another device.
func checkFits(m Manifest, info ImageInfo) error {
	board := m.Board
	if board == "" {
		board = DefaultBoard
	}
	switch {
	case m.Arch != info.Arch:
		return fmt.Errorf("the bundle is for arch %s, this device is %s", m.Arch, info.Arch)
	case board != info.Board:
		return fmt.Errorf("the bundle is for board %q, this device is %q", board, info.Board)
	case m.Loader != info.Loader:
		return fmt.Errorf("the bundle is for loader %s, this device boots through %s", m.Loader, info.Loader)
	case info.Loader != layout.LoaderUEFI && info.Loader != layout.LoaderUBoot:
		return fmt.Errorf("upgrades need loader uefi or uboot, which count trial boots (this device boots through %s)", info.Loader)
	}
	return nil
}

// bootFilesFit checks the boot partition has room for the new kernel and
// initramfs once the slot's old ones are removed, with a cluster of slack
// per file (statfs f_bsize is the FAT cluster size).
func bootFilesFit(espDir string, slot layout.Slot, m Manifest) error {
	var st unix.Statfs_t
	if err := unix.Statfs(espDir, &st); err != nil {
		return fmt.Errorf("free space on the boot partition: %w", err)
	}
	bsize := int64(st.Bsize)
	free := int64(st.Bavail) * bsize
	var need int64
	for _, name := range []string{layout.KernelFile, layout.InitrdFile} {
		f, _ := m.File(name)
		need += f.Size + 2*bsize
		for _, old := range []string{name, name + ".tmp"} {
			if fi, err := os.Stat(filepath.Join(espDir, slot.Dir(), old)); err == nil {
				free += fi.Size()
			}
		}
	}
	if need > free {
		return fmt.Errorf("the boot partition has %d KiB free for slot %s's kernel and initramfs, the bundle's need %d KiB", free>>10, slot, need>>10)
	}
	return nil
}

func mib(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// writeRoot copies the root to the partition, syncs, drops the cached
// pages and reads it back through the device.
func (s *System) writeRoot(br *Reader, dev *os.File, slot layout.Slot, part Partition, want File) error {
	f, r, err := br.Next()
	if err != nil {
		return err
	}
	if f.Name != RootName {
		return fmt.Errorf("bundle member %s where %s was expected", f.Name, RootName)
	}
	if _, err := dev.Seek(0, io.SeekStart); err != nil {
		return err
	}
	p := &progress{w: s.Progress, what: fmt.Sprintf("writing slot %s", slot), total: want.Size}
	buf := make([]byte, 256<<10)
	w := s.writer(dev)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("write slot %s's partition %s: %w", slot, part.Dev(), err)
			}
			p.add(int64(n))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", part.Dev(), err)
	}
	s.step()
	if err := dropCache(dev); err != nil {
		return fmt.Errorf("drop the cache of %s: %w", part.Dev(), err)
	}
	if _, err := dev.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := checkSum(io.LimitReader(dev, want.Size), want); err != nil {
		return fmt.Errorf("read back slot %s's partition %s: %w", slot, part.Dev(), err)
	}
	fmt.Fprintf(orDiscard(s.Progress), "upgrade: slot %s's root (%d MiB) written and read back\n", slot, mib(want.Size))
	return nil
}

// writeBootFiles writes the slot's kernel and initramfs, each read back
// before it is renamed into place.
func (s *System) writeBootFiles(br *Reader, espDir string, slot layout.Slot) error {
	dir := filepath.Join(espDir, slot.Dir())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := syncDir(espDir); err != nil {
		return err
	}
	// The entry that named them is gone: removing them first makes room.
	for _, name := range []string{layout.KernelFile, layout.InitrdFile} {
		if err := s.removeFile(dir, name); err != nil {
			return fmt.Errorf("remove slot %s's old %s: %w", slot, name, err)
		}
	}
	for {
		f, r, err := br.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		err = s.replaceFile(dir, f.Name, func(w io.Writer) error {
			_, err := io.Copy(w, r)
			return err
		}, func(tmp string) error {
			return readBack(tmp, f)
		})
		if err != nil {
			return fmt.Errorf("slot %s's %s: %w", slot, f.Name, err)
		}
	}
}

func readBack(path string, want File) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := dropCache(f); err != nil {
		return err
	}
	return checkSum(f, want)
}

func checkSum(r io.Reader, want File) error {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != want.Size || got != want.SHA256 {
		return fmt.Errorf("read back %d bytes with sha256 %s, wrote %d with %s: %w", n, got, want.Size, want.SHA256, ErrChecksum)
	}
	return nil
}

// dropCache makes the next read come from the device, not the page cache:
// BLKFLSBUF on a block device (flush and invalidate its buffers), then
// POSIX_FADV_DONTNEED on the file's pages.
func dropCache(f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
			return fmt.Errorf("BLKFLSBUF: %w", err)
		}
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil && !errors.Is(err, unix.ESPIPE) {
		return fmt.Errorf("fadvise DONTNEED: %w", err)
	}
	return nil
}

// progress prints a line each time another tenth is done.
type progress struct {
	w           io.Writer
	what        string
	total, done int64
	shown       int64 // tenths shown
}

func (p *progress) add(n int64) {
	p.done += n
	if p.w == nil || p.total <= 0 {
		return
	}
	tenths := p.done * 10 / p.total
	if tenths <= p.shown {
		return
	}
	p.shown = tenths
	fmt.Fprintf(p.w, "upgrade: %s: %d%% (%d/%d MiB)\n", p.what, tenths*10, mib(p.done), mib(p.total))
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
