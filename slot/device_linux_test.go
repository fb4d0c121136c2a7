package slot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/layout"
)

// fakeMounter records the boot partition's mounts; the "partition" is
// the directory already at ESPMountDir.
type fakeMounter struct {
	calls []string
	fail  error
}

func (m *fakeMounter) MountESP(dev, dir string, rw bool) error {
	m.calls = append(m.calls, fmt.Sprintf("mount %s rw=%v", filepath.Base(dev), rw))
	return m.fail
}

func (m *fakeMounter) Unmount(dir string) error {
	m.calls = append(m.calls, "unmount")
	return nil
}

// device is a temp tree: sysfs with vda1 boot, vda2 rootfs_a, vda3
// rootfs_b, vda4 rootfs_data (and vdb1 rootfs_b on another disk, which
// must never be touched), partitions as regular files, the ESP as a
// directory, and the boot record.
type testDevice struct {
	t       *testing.T
	root    string
	mounter *fakeMounter
	sys     *System
	bundle  string
	rootImg []byte // the bundle's root
	kernel  []byte
	initrd  []byte
	m       Manifest
}

const partSize = 4 << 20

func write(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func random(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

type deviceOpts struct {
	state   string // boot record; "" = slot a, persistent
	entries map[string]Entry
	files   map[string]string // raw files in loader/entries, instead of entries (U-Boot)
	info    string            // ovroot.json
	bundle  func(m *Manifest)
	rootLen int
	// unsigned makes a bundle without a signature; policy replaces the
	// running root's update.json ({"version":"1"}).
	unsigned bool
	policy   string
	// signSeed signs with test key signSeed instead of 1 (the trusted
	// one); highest is the data partition's highest confirmed version.
	signSeed byte
	highest  string
	noKeys   bool // the running root trusts no key
}

var factoryA = Entry{Slot: layout.SlotA, Generation: 1, BuildID: "aaaaaaaaaaaaaaaa", Options: "console=ttyS0", Loader: layout.LoaderUEFI}

func newDevice(t *testing.T, o deviceOpts) *testDevice {
	t.Helper()
	root := t.TempDir()
	d := &testDevice{t: t, root: root, mounter: &fakeMounter{}}
	for _, p := range []struct{ disk, name, label string }{
		{"vda", "vda1", "boot"}, {"vda", "vda2", "rootfs_a"}, {"vda", "vda3", "rootfs_b"}, {"vda", "vda4", "rootfs_data"}, {"vdb", "vdb1", "rootfs_b"},
	} {
		dev := filepath.Join(root, "sys/devices/pci0/block", p.disk, p.name)
		write(t, filepath.Join(dev, "uevent"), []byte(fmt.Sprintf("MAJOR=254\nMINOR=1\nDEVNAME=%s\nDEVTYPE=partition\nPARTN=1\nPARTNAME=%s\n", p.name, p.label)))
		os.MkdirAll(filepath.Join(root, "sys/class/block"), 0o755)
		if err := os.Symlink(filepath.Join("../../devices/pci0/block", p.disk, p.name), filepath.Join(root, "sys/class/block", p.name)); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(root, "sys/devices/pci0/block/vda/uevent"), []byte("DEVNAME=vda\nDEVTYPE=disk\n"))
	os.Symlink("../../devices/pci0/block/vda", filepath.Join(root, "sys/class/block/vda"))
	write(t, filepath.Join(root, "dev/vda2"), random(2, partSize))
	write(t, filepath.Join(root, "dev/vda3"), random(3, partSize))
	write(t, filepath.Join(root, "dev/vdb1"), random(4, partSize))
	state := o.state
	if state == "" {
		state = `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda4","slot":{"slot":"a","build_id":"aaaaaaaaaaaaaaaa"},"timings_ms":{}}`
	}
	write(t, filepath.Join(root, layout.StateFile), []byte(state))
	esp := filepath.Join(root, layout.ESPMountDir)
	info := o.info
	if info == "" {
		info = `{"arch":"x86_64","loader":"uefi","board":"generic","cmdline":"console=ttyS0"}`
	}
	write(t, filepath.Join(esp, layout.BootInfoFile), []byte(info))
	write(t, filepath.Join(esp, "loader/loader.conf"), []byte("timeout 0\neditor no\ndefault ovroot-*\n"))
	write(t, filepath.Join(esp, "slot-a/vmlinuz"), []byte("kernel a"))
	write(t, filepath.Join(esp, "slot-a/initrd.img"), []byte("initrd a"))
	entries := o.entries
	if entries == nil && o.files == nil {
		entries = map[string]Entry{"ovroot-a.conf": factoryA}
	}
	os.MkdirAll(filepath.Join(esp, layout.EntriesDir), 0o755)
	for name, e := range entries {
		write(t, filepath.Join(esp, layout.EntriesDir, name), []byte(e.Text()))
	}
	for name, text := range o.files {
		write(t, filepath.Join(esp, layout.EntriesDir, name), []byte(text))
	}
	os.MkdirAll(filepath.Join(root, layout.OverlayDir, layout.MetaDir), 0o755)

	n := o.rootLen
	if n == 0 {
		n = 100<<10 + 123
	}
	d.rootImg, d.kernel, d.initrd = random(10, n), random(11, 5000), random(12, 7000)
	m := Manifest{Arch: layout.X86_64, Board: "generic", Loader: layout.LoaderUEFI, Cmdline: "console=ttyS0 quiet", KernelRelease: "6.1.0-test", Tries: 3, Created: time.Unix(1700000000, 0).UTC(), Version: "2"}
	if o.bundle != nil {
		o.bundle(&m)
	}
	var buf bytes.Buffer
	src := func(name string, b []byte) Source {
		return Source{Name: name, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
	}
	pub, _ := testKeyPair(t, 1)
	seed := o.signSeed
	if seed == 0 {
		seed = 1
	}
	_, priv := testKeyPair(t, seed)
	key := &priv
	if o.unsigned {
		key = nil
	}
	if err := WriteBundle(&buf, m, []Source{src(RootName, d.rootImg), src(layout.KernelFile, d.kernel), src(layout.InitrdFile, d.initrd)}, key); err != nil {
		t.Fatal(err)
	}
	d.bundle = filepath.Join(t.TempDir(), "update.bundle")
	write(t, d.bundle, buf.Bytes())
	// The running root (its read-only lower) trusts key 1 and is version 1.
	rom := filepath.Join(root, layout.RomDir)
	text, _ := pub.Key.MarshalText()
	if !o.noKeys {
		write(t, filepath.Join(rom, layout.TrustedKeysDir, "release.pub"), text)
	}
	policy := o.policy
	if policy == "" {
		policy = `{"version":"1"}`
	}
	write(t, filepath.Join(rom, layout.UpdatePolicyFile), []byte(policy))
	if o.highest != "" {
		write(t, layout.Meta(filepath.Join(root, layout.OverlayDir), layout.HighestVersionFile), []byte(o.highest+"\n"))
	}
	signer, _ := testKeyPair(t, seed)
	br, err := NewReader(bytes.NewReader(buf.Bytes()), Trust{Keys: []Key{signer}, AllowUnsigned: true})
	if err != nil {
		t.Fatal(err)
	}
	d.m = br.Manifest
	d.sys = &System{Root: root, Mounter: d.mounter, Now: func() time.Time { return time.Unix(1800000000, 0) }}
	return d
}

// tree is every file under the device root with its content's hash (the
// ESP lock file aside: taking the lock is not a change).
func (d *testDevice) tree() map[string]string {
	d.t.Helper()
	out := map[string]string{}
	filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			d.t.Fatal(err)
		}
		rel, _ := filepath.Rel(d.root, p)
		if e.Type().IsRegular() && rel != "run/ovroot/esp.lock" {
			data, _ := os.ReadFile(p)
			s := sha256.Sum256(data)
			out[rel] = hex.EncodeToString(s[:8])
		} else if e.IsDir() {
			out[rel+"/"] = "dir"
		}
		return nil
	})
	return out
}

func diffTrees(a, b map[string]string) []string {
	var diff []string
	for k, v := range a {
		if b[k] != v {
			diff = append(diff, fmt.Sprintf("%s: %s -> %s", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			diff = append(diff, fmt.Sprintf("%s: new %s", k, v))
		}
	}
	sort.Strings(diff)
	return diff
}

func (d *testDevice) esp(p string) string {
	return filepath.Join(d.root, layout.ESPMountDir, p)
}

func (d *testDevice) entryFiles() []string {
	ents, _ := os.ReadDir(d.esp(layout.EntriesDir))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestUpgrade(t *testing.T) {
	d := newDevice(t, deviceOpts{entries: map[string]Entry{
		"ovroot-a.conf":     factoryA,
		"ovroot-b+0-3.conf": {Slot: layout.SlotB, Generation: 7, BuildID: "bbbbbbbbbbbbbbbb", Loader: layout.LoaderUEFI},
	}, rootLen: 3<<20 + 5})
	write(t, d.esp("slot-b/vmlinuz"), []byte("old kernel b"))
	vdb1 := d.tree()["dev/vdb1"]
	var progress bytes.Buffer
	d.sys.Progress = &progress
	res, err := d.sys.Upgrade(d.bundle, UpgradeOptions{})
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	pub, _ := testKeyPair(t, 1)
	want := UpgradeResult{Slot: layout.SlotB, BuildID: BuildIDOf(d.rootImg), Tries: 3, Generation: 8, Entry: "ovroot-b+3.conf", Version: "2", Signer: pub.ID()}
	if res != want {
		t.Errorf("Upgrade = %+v, want %+v", res, want)
	}
	if got, want := d.entryFiles(), []string{"ovroot-a.conf", "ovroot-b+3.conf"}; !equal(got, want) {
		t.Errorf("entries = %v, want %v", got, want)
	}
	data, _ := os.ReadFile(d.esp("loader/entries/ovroot-b+3.conf"))
	wantEntry := Entry{Slot: layout.SlotB, Generation: 8, BuildID: BuildIDOf(d.rootImg), Options: "console=ttyS0 quiet", Loader: layout.LoaderUEFI, Release: "6.1.0-test"}
	if string(data) != wantEntry.Text() {
		t.Errorf("entry:\n%s\nwant:\n%s", data, wantEntry.Text())
	}
	part, _ := os.ReadFile(filepath.Join(d.root, "dev/vda3"))
	if !bytes.Equal(part[:len(d.rootImg)], d.rootImg) || len(part) != partSize {
		t.Errorf("slot b's partition does not start with the root (or changed size: %d)", len(part))
	}
	for name, want := range map[string][]byte{"slot-b/vmlinuz": d.kernel, "slot-b/initrd.img": d.initrd} {
		if got, _ := os.ReadFile(d.esp(name)); !bytes.Equal(got, want) {
			t.Errorf("%s differs from the bundle's", name)
		}
	}
	if d.tree()["dev/vdb1"] != vdb1 {
		t.Error("the rootfs_b partition of another disk was written")
	}
	events, _ := ReadEvents(filepath.Join(d.root, "overlay/.ovroot/slot-log"))
	if len(events) != 1 || events[0].Event != "upgraded" || events[0].Slot != layout.SlotB || events[0].BuildID != res.BuildID {
		t.Errorf("slot log = %+v, want one upgraded event for slot b", events)
	}
	if got, want := strings.Join(d.mounter.calls, "; "), "mount vda1 rw=true; unmount"; got != want {
		t.Errorf("mounts = %q, want %q", got, want)
	}
	for _, want := range []string{"upgrade: writing slot b: 10% (", "upgrade: writing slot b: 100% (4/4 MiB)", "written and read back"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	if n := strings.Count(progress.String(), "writing slot b"); n < 5 || n > 10 {
		t.Errorf("%d progress lines, want one every ~10%%:\n%s", n, progress.String())
	}
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

func TestUpgradeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      deviceOpts
		corrupt   bool
		flip      string // flip a bit in the bundle's first line of this member
		downgrade bool
		wantErr   string
	}{
		{name: "unsigned", opts: deviceOpts{unsigned: true}, wantErr: "the bundle is not signed, and this device installs only bundles signed by a key it trusts (2D02F6C9B11AE2C5 release.pub) (nothing was changed)"},
		{name: "untrusted key", opts: deviceOpts{signSeed: 2}, wantErr: "which this device does not trust (it trusts 2D02F6C9B11AE2C5 release.pub)"},
		{name: "manifest bit flipped", flip: ManifestName, wantErr: "does not verify: its manifest or signature was changed after signing (nothing was changed)"},
		{name: "signature bit flipped", flip: SigName, wantErr: "does not verify"},
		{name: "trusts no key", opts: deviceOpts{noKeys: true}, wantErr: "which this device does not trust (it trusts no key: its image was built without [update] trusted_keys)"},
		{name: "trusts no key, unsigned", opts: deviceOpts{noKeys: true, unsigned: true}, wantErr: "the bundle is not signed, and this device installs only bundles signed by a key it trusts (no key: its image"},
		{name: "older than the running root", opts: deviceOpts{policy: `{"version":"2.1"}`}, wantErr: "the bundle's version 2 is older than the running root's version 2.1: refusing a downgrade (nothing was changed)"},
		{name: "older than the highest confirmed", opts: deviceOpts{highest: "10"}, wantErr: "the bundle's version 2 is older than version 10, the highest this device ever confirmed: refusing a downgrade"},
		{name: "downgrade asked, image forbids", opts: deviceOpts{highest: "3"}, downgrade: true, wantErr: "this image does not allow downgrades ([update] allow_downgrade is false): --allow-downgrade is refused"},
		{name: "format 1", opts: deviceOpts{unsigned: true, policy: `{"version":"1","allow_unsigned":true}`}, flip: "format 1", wantErr: "bundle format 1 was made by an ovroot before signed"},
		{name: "another arch", opts: deviceOpts{bundle: func(m *Manifest) { m.Arch = layout.ARM64 }}, wantErr: "the bundle is for arch arm64, this device is x86_64"},
		{name: "another board", opts: deviceOpts{bundle: func(m *Manifest) { m.Board = "rpi4" }}, wantErr: `the bundle is for board "rpi4", this device is "generic"`},
		{name: "board of the image", opts: deviceOpts{info: `{"arch":"x86_64","loader":"uefi","board":"apu2"}`}, wantErr: `this device is "apu2"`},
		{name: "another loader", opts: deviceOpts{bundle: func(m *Manifest) { m.Loader = layout.LoaderUBoot }}, wantErr: "the bundle is for loader uboot, this device boots through uefi"},
		{name: "root larger than the partition", opts: deviceOpts{rootLen: partSize + 1}, wantErr: "slot b's partition /dev/vda3 holds"},
		{name: "corrupt bundle", corrupt: true, wantErr: "checksum mismatch (nothing was changed)"},
		{name: "one-slot boot", opts: deviceOpts{state: `{"mode":"persistent","root_device":"/dev/vda2","timings_ms":{}}`}, wantErr: "not booted from a two-slot image"},
		{name: "running slot on trial", opts: deviceOpts{entries: map[string]Entry{"ovroot-a+2-1.conf": factoryA, "ovroot-b.conf": {Slot: layout.SlotB, Generation: 1, BuildID: "bbbbbbbbbbbbbbbb"}}}, wantErr: "the running slot a is on trial (ovroot-a+2-1.conf): confirm it"},
		{name: "running slot has no entry", opts: deviceOpts{entries: map[string]Entry{"ovroot-b.conf": {Slot: layout.SlotB, Generation: 1, BuildID: "bbbbbbbbbbbbbbbb"}}}, wantErr: "the running slot a has no boot entry"},
		{name: "no such bundle", opts: deviceOpts{}, wantErr: "open the bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, tc.opts)
			if tc.corrupt {
				data, _ := os.ReadFile(d.bundle)
				i := bytes.Index(data, d.rootImg[:64])
				data[i+len(d.rootImg)/2] ^= 1
				write(t, d.bundle, data)
			}
			if tc.flip == "format 1" {
				data, _ := os.ReadFile(d.bundle)
				write(t, d.bundle, bytes.Replace(data, []byte(`"format": 2,`), []byte(`"format": 1,`), 1))
			} else if tc.flip != "" {
				data, _ := os.ReadFile(d.bundle)
				i := bytes.Index(data, []byte(tc.flip+"\x00")) + 512 // the member's bytes follow its header
				if tc.flip == SigName {
					i += bytes.IndexByte(data[i:], '\n') + 40 // inside the signature's ed25519 bytes
				} else {
					i += 20
				}
				data[i] ^= 1
				write(t, d.bundle, data)
			}
			bundle := d.bundle
			if tc.name == "no such bundle" {
				bundle += ".missing"
			}
			before := d.tree()
			_, err := d.sys.Upgrade(bundle, UpgradeOptions{AllowDowngrade: tc.downgrade})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Upgrade = %v, want an error with %q", err, tc.wantErr)
			}
			if diff := diffTrees(before, d.tree()); len(diff) > 0 {
				t.Errorf("a refused upgrade changed the device:\n%s", strings.Join(diff, "\n"))
			}
			if n := len(d.mounter.calls); n%2 != 0 {
				t.Errorf("mounts not undone: %v", d.mounter.calls)
			}
		})
	}
}

// TestUpgradePowerCut cuts the power at every write and every step of an
// upgrade in turn and checks what the loader would find: every entry is
// whole, and an entry exists only for a slot whose root, kernel and
// initramfs are completely written. The running slot's entry is never
// touched.
func TestUpgradePowerCut(t *testing.T) {
	oldB := Entry{Slot: layout.SlotB, Generation: 1, BuildID: BuildIDOf(random(3, partSize)[:4096]), Loader: layout.LoaderUEFI}
	for at := 1; ; at++ {
		d := newDevice(t, deviceOpts{entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b.conf": oldB}, rootLen: 3<<20 + 5})
		newB := Entry{Slot: layout.SlotB, Generation: 2, BuildID: d.m.BuildID, Options: d.m.Cmdline, Loader: d.m.Loader, Release: d.m.KernelRelease}
		// slot b as it was: a root of 4096 bytes and its boot files.
		os.Truncate(filepath.Join(d.root, "dev/vda3"), 3<<20+4096)
		write(t, d.esp("slot-b/vmlinuz"), []byte("kernel b"))
		write(t, d.esp("slot-b/initrd.img"), []byte("initrd b"))
		// The device confirmed version 0.5 before; this upgrade records
		// the running root's 1 at its end: after any cut the record is
		// one of the two, whole.
		highest := layout.Meta(filepath.Join(d.root, layout.OverlayDir), layout.HighestVersionFile)
		write(t, highest, []byte("0.5\n"))
		finished := d.upgradeCutAt(at)
		d.checkBootable(at, factoryA, oldB, newB)
		if got, _ := os.ReadFile(highest); string(got) != "0.5\n" && string(got) != "1\n" {
			t.Fatalf("cut at %d: the highest confirmed version reads %q, want 0.5 or 1", at, got)
		}
		if finished {
			d.checkFinished(at, "ovroot-a.conf", "ovroot-b+3.conf")
			if got, _ := os.ReadFile(highest); string(got) != "1\n" {
				t.Fatalf("after the whole upgrade the highest confirmed version reads %q, want 1", got)
			}
			return
		}
	}
}

// upgradeCutAt runs an upgrade that a power cut at event at stops; it
// reports whether the upgrade finished first.
func (d *testDevice) upgradeCutAt(at int) (finished bool) {
	d.sys.cut = &powerCut{at: at}
	defer func() {
		if r := recover(); r != nil && r != errPowerCut {
			panic(r)
		}
	}()
	if _, err := d.sys.Upgrade(d.bundle, UpgradeOptions{}); err != nil {
		d.t.Fatalf("cut at %d: Upgrade: %v", at, err)
	}
	return true
}

// checkFinished checks an upgrade no cut stopped: there were enough cut
// points, and the entries are want.
func (d *testDevice) checkFinished(at int, want ...string) {
	d.t.Helper()
	if at < 10 {
		d.t.Fatalf("only %d cut points: the cut hooks are not reached", at)
	}
	if got := d.entryFiles(); !equal(got, want) {
		d.t.Fatalf("after the whole upgrade entries are %v, want %v", got, want)
	}
}

// checkBootable is the invariant a power cut must keep.
// want lists the entries that may be on the ESP, whole.
func (d *testDevice) checkBootable(at int, want ...Entry) {
	allowed := map[string]bool{}
	for _, e := range want {
		allowed[e.Text()] = true
	}
	d.checkBootableIn(at, allowed, "ovroot-a.conf")
}

// checkBootableIn is checkBootable for entry files whose whole texts are
// allowed, and slot a's entry file aFile.
func (d *testDevice) checkBootableIn(at int, allowed map[string]bool, aFile string) {
	t := d.t
	t.Helper()
	ents, err := ListEntries(filepath.Join(d.root, layout.ESPMountDir))
	if err != nil {
		t.Fatal(err)
	}
	haveA := false
	for _, se := range ents {
		if se.Err != nil {
			t.Fatalf("cut at %d: a torn entry is visible to the loader: %v", at, se.Err)
		}
		data, _ := os.ReadFile(d.esp(filepath.Join(layout.EntriesDir, se.File)))
		if !allowed[string(data)] {
			t.Fatalf("cut at %d: entry %s is not whole:\n%s", at, se.File, data)
		}
		if se.Name.Slot == layout.SlotA {
			haveA = se.File == aFile && se.Entry.BuildID == factoryA.BuildID && !se.Name.Counted
			continue
		}
		part, _ := os.ReadFile(filepath.Join(d.root, "dev/vda3"))
		kernel, _ := os.ReadFile(d.esp("slot-b/vmlinuz"))
		initrd, _ := os.ReadFile(d.esp("slot-b/initrd.img"))
		if se.Entry.BuildID == BuildIDOf(d.rootImg) {
			if !bytes.Equal(part[:len(d.rootImg)], d.rootImg) || !bytes.Equal(kernel, d.kernel) || !bytes.Equal(initrd, d.initrd) {
				t.Fatalf("cut at %d: entry %s is visible before slot b's root, kernel and initramfs are whole", at, se.File)
			}
		} else if BuildIDOf(part[:4096]) != se.Entry.BuildID || string(kernel) != "kernel b" || string(initrd) != "initrd b" {
			t.Fatalf("cut at %d: the old entry %s is still there but slot b was changed", at, se.File)
		}
	}
	if !haveA {
		t.Fatalf("cut at %d: the running slot's entry %s is gone or changed: %v", at, aFile, d.entryFiles())
	}
}

func TestMarkGood(t *testing.T) {
	trialB := Entry{Slot: layout.SlotB, Generation: 2, BuildID: "bbbbbbbbbbbbbbbb", Loader: layout.LoaderUEFI}
	stateB := `{"mode":"persistent","root_device":"/dev/vda3","slot":{"slot":"b","build_id":"bbbbbbbbbbbbbbbb","trial":{"entry":"loader/entries/ovroot-b+2-1.conf","tries_left":2,"tries_done":1}},"timings_ms":{}}`
	for _, tc := range []struct {
		name        string
		state       string
		entries     map[string]Entry
		wantFrom    string
		wantEntries []string
		wantEvents  int
		wantErr     string
	}{
		{name: "counted entry", state: stateB, entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b+2-1.conf": trialB},
			wantFrom: "ovroot-b+2-1.conf", wantEntries: []string{"ovroot-a.conf", "ovroot-b.conf"}, wantEvents: 1},
		{name: "already confirmed", state: stateB, entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b.conf": trialB},
			wantEntries: []string{"ovroot-a.conf", "ovroot-b.conf"}},
		{name: "counted twin of a confirmed entry", state: stateB, entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b.conf": trialB, "ovroot-b+2-1.conf": trialB},
			wantEntries: []string{"ovroot-a.conf", "ovroot-b.conf"}},
		{name: "entry of another build", state: stateB, entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b+2-1.conf": {Slot: layout.SlotB, Generation: 2, BuildID: "cccccccccccccccc"}},
			wantErr: "entry ovroot-b+2-1.conf boots build cccccccccccccccc, but this boot is build bbbbbbbbbbbbbbbb", wantEntries: []string{"ovroot-a.conf", "ovroot-b+2-1.conf"}},
		{name: "no entry", state: stateB, entries: map[string]Entry{"ovroot-a.conf": factoryA},
			wantErr: "no boot entry for the running slot b", wantEntries: []string{"ovroot-a.conf"}},
		{name: "one-slot boot", state: `{"mode":"persistent","root_device":"/dev/vda2","timings_ms":{}}`, entries: map[string]Entry{"ovroot-a.conf": factoryA},
			wantErr: "not booted from a two-slot image", wantEntries: []string{"ovroot-a.conf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, deviceOpts{state: tc.state, entries: tc.entries})
			res, err := d.sys.MarkGood()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("MarkGood = %v, want an error with %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("MarkGood: %v", err)
			}
			if res.From != tc.wantFrom {
				t.Errorf("MarkGood renamed %q, want %q", res.From, tc.wantFrom)
			}
			if got := d.entryFiles(); !equal(got, tc.wantEntries) {
				t.Errorf("entries = %v, want %v", got, tc.wantEntries)
			}
			events, _ := ReadEvents(filepath.Join(d.root, "overlay/.ovroot/slot-log"))
			if len(events) != tc.wantEvents {
				t.Errorf("slot log = %+v, want %d events", events, tc.wantEvents)
			}
			if tc.wantErr == "" {
				// Idempotent: a second call changes nothing.
				before := d.tree()
				res, err := d.sys.MarkGood()
				if err != nil || res.From != "" {
					t.Errorf("second MarkGood = %+v, %v; want nothing to do", res, err)
				}
				if diff := diffTrees(before, d.tree()); len(diff) > 0 {
					t.Errorf("second MarkGood changed:\n%s", strings.Join(diff, "\n"))
				}
			}
			if strings.Count(strings.Join(d.mounter.calls, ";"), "mount vda1 rw=true") > 0 && len(d.mounter.calls)%2 != 0 {
				t.Errorf("mounts not undone: %v", d.mounter.calls)
			}
		})
	}
}

func TestMarkGoodMountFails(t *testing.T) {
	d := newDevice(t, deviceOpts{state: `{"mode":"persistent","root_device":"/dev/vda2","slot":{"slot":"a"},"timings_ms":{}}`})
	d.mounter.fail = errors.New("no such device")
	_, err := d.sys.MarkGood()
	if err == nil || !strings.Contains(err.Error(), "mount the boot partition /dev/vda1 (boot): no such device") {
		t.Fatalf("MarkGood = %v", err)
	}
}

func TestSlots(t *testing.T) {
	b := Entry{Slot: layout.SlotB, Generation: 2, BuildID: "bbbbbbbbbbbbbbbb", Loader: layout.LoaderUEFI}
	for _, tc := range []struct {
		name    string
		entries map[string]Entry
		log     string
		want    []string
	}{
		{name: "factory", entries: map[string]Entry{"ovroot-a.conf": factoryA},
			want: []string{"slot a: generation 1, build aaaaaaaaaaaaaaaa, confirmed, running", "slot b: empty (no boot entry)"}},
		{name: "trial", entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b+2-1.conf": b},
			want: []string{"slot a: generation 1, build aaaaaaaaaaaaaaaa, confirmed, running", "slot b: generation 2, build bbbbbbbbbbbbbbbb, on trial (2 of 3 tries left)"}},
		{name: "abandoned", entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b+0-3.conf": b},
			log: `{"time":"2026-01-01T00:00:00Z","slot":"b","build_id":"bbbbbbbbbbbbbbbb","event":"trial-failed","reason":"mount squashfs: invalid argument"}` + "\n" +
				`{"time":"2026-01-01T00:00:00Z","slot":"b","build_id":"bbbbbbbbbbbbbbbb","event":"trial-failed","reason":"mount squashfs: bad magic"}` + "\n{torn",
			want: []string{"slot b: ABANDONED: build bbbbbbbbbbbbbbbb was tried 3 times and never confirmed (last failure: mount squashfs: bad magic)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, deviceOpts{entries: tc.entries})
			if tc.log != "" {
				write(t, filepath.Join(d.root, "overlay/.ovroot/slot-log"), []byte(tc.log))
			}
			infos, err := d.sys.Slots()
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for _, i := range infos {
				lines = append(lines, i.Line())
			}
			got := strings.Join(lines, "\n")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("slot lines lack %q:\n%s", w, got)
				}
			}
			if got, want := strings.Join(d.mounter.calls, "; "), "mount vda1 rw=false; unmount"; got != want {
				t.Errorf("mounts = %q, want %q", got, want)
			}
		})
	}
}

// TestHighestVersion: a successful upgrade records the running (confirmed)
// root's version, mark-good records the version it confirms, a lower one
// never replaces a higher one, and an image that allows downgrades
// installs an older bundle only when asked.
func TestHighestVersion(t *testing.T) {
	highest := func(d *testDevice) string {
		data, _ := os.ReadFile(layout.Meta(filepath.Join(d.root, layout.OverlayDir), layout.HighestVersionFile))
		return string(data)
	}
	d := newDevice(t, deviceOpts{})
	if _, err := d.sys.Upgrade(d.bundle, UpgradeOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := highest(d); got != "1\n" {
		t.Errorf("after an upgrade from version 1: highest %q, want 1", got)
	}
	write(t, filepath.Join(d.root, layout.RomDir, layout.UpdatePolicyFile), []byte(`{"version":"0.9"}`))
	if _, err := d.sys.MarkGood(); err != nil {
		t.Fatal(err)
	}
	if got := highest(d); got != "1\n" {
		t.Errorf("mark-good of version 0.9 after 1: highest %q, want 1 kept", got)
	}
	write(t, filepath.Join(d.root, layout.RomDir, layout.UpdatePolicyFile), []byte(`{"version":"1.1"}`))
	if _, err := d.sys.MarkGood(); err != nil {
		t.Fatal(err)
	}
	if got := highest(d); got != "1.1\n" {
		t.Errorf("mark-good of version 1.1: highest %q", got)
	}

	d = newDevice(t, deviceOpts{policy: `{"version":"3","allow_downgrade":true}`})
	if _, err := d.sys.Upgrade(d.bundle, UpgradeOptions{}); err == nil || !strings.Contains(err.Error(), "refusing a downgrade") {
		t.Fatalf("downgrade not asked for: %v", err)
	}
	res, err := d.sys.Upgrade(d.bundle, UpgradeOptions{AllowDowngrade: true})
	if err != nil || !strings.Contains(res.Warning, "downgrading as asked") {
		t.Fatalf("downgrade asked, image allows: %+v, %v", res, err)
	}
	if got := highest(d); got != "3\n" {
		t.Errorf("after a downgrade from 3: highest %q, want 3", got)
	}
}
