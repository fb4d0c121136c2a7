package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
	"github.com/ovroot/ovroot/slot"
	"github.com/ovroot/ovroot/verity"
)

// The A/B tests: a two-slot image boots through UEFI and systemd-boot,
// one boot per QEMU run (-no-reboot: a reboot or a kernel panic ends the
// run), so the host counts the boots and sees every one. An update bundle
// is a second disk the guest reads as /dev/vdb.

// abTries is the trial boots a new slot gets in these tests: fewer boots
// to prove "at most N" than the default 3.
const abTries = 2

// abChain is a boot chain the A/B tests run on.
type abChain struct {
	arch   layout.Arch
	loader layout.Loader
}

// slotChains are the chains the A/B tests can run on: x86_64 and arm64
// UEFI (systemd-boot's boot counting), and 32-bit ARM with U-Boot
// (boot.scr's). make test runs upgrade/ on x86_64 and arm-uboot and
// powercuts/ on x86_64 (chainsFrom).
var slotChains = []abChain{{layout.X86_64, layout.LoaderUEFI}, {layout.ARM64, layout.LoaderUEFI}, {layout.ARM, layout.LoaderUBoot}}

// verity reports whether the chain's images are verity images.
func (c abChain) verity() bool { return c.arch == layout.X86_64 }

func (c abChain) name() string {
	if c.loader == layout.LoaderUEFI {
		return string(c.arch)
	}
	return string(c.arch) + "-" + string(c.loader)
}

// image is the image.toml edit of every A/B test image of the chain:
// release 1, trusting test key a, whose bundles are signed by it. The
// x86_64 chain's roots are verity roots: upgrades carry the tree in the
// root member and its hash in the signed manifest's command line.
func (c abChain) image(im *config.Image) {
	im.Slots = 2
	im.Verity = c.verity()
	if c.arch != layout.ARM {
		im.Modules = append(im.Modules, "i6300esb")
		im.Init.TrialWatchdog = config.OffDuration(20 * time.Second)
	}
	im.Boot.Loader = string(c.loader)
	im.Boot.Tries = abTries
	im.Board = "test-board"
	im.Update.Version = "1"
	im.Update.TrustedKeys = []string{testKey("a") + ".pub"}
	im.Update.SignKey = testKey("a") + ".key"
}

// release sets the [update] version of a bundle.
func release(v string) func(*config.Image) {
	return func(im *config.Image) { im.Update.Version = v }
}

// The test keys a, b and c (minisign key pairs made once per test run):
// testKey(name) is the path without .key or .pub.
var (
	testKeysOnce sync.Once
	testKeysDir  string
	testKeysErr  error
)

func testKey(name string) string {
	testKeysOnce.Do(func() {
		if testKeysDir, testKeysErr = os.MkdirTemp("", "ovroot-test-keys-"); testKeysErr != nil {
			return
		}
		for _, n := range []string{"a", "b", "c"} {
			pub, priv, err := slot.GenerateKey(nil)
			if err != nil {
				testKeysErr = err
				return
			}
			os.WriteFile(filepath.Join(testKeysDir, n+".pub"), pub, 0o644)
			os.WriteFile(filepath.Join(testKeysDir, n+".key"), priv, 0o600)
		}
	})
	if testKeysErr != nil {
		panic(testKeysErr)
	}
	return filepath.Join(testKeysDir, name)
}

// confirmText is what confirming slot b after its first trial boot
// reports (mark-good and the confirm_after confirmer alike): the counted
// entry and what it became.
func (c abChain) confirmText() string {
	if c.loader == layout.LoaderUBoot {
		return fmt.Sprintf("ovroot-b.env with 1 of %d tries used is now ovroot-b.env with tries 0", abTries)
	}
	return fmt.Sprintf("ovroot-b+%d-1.conf is now ovroot-b.conf", abTries-1)
}

// entries are the files the host must see in loader/entries: both slots
// confirmed, or slot s on trial with done of abTries boots counted (U-Boot
// shows the count in its marker files, systemd-boot in the name).
func (c abChain) entries(trial layout.Slot, done int) []string {
	var out []string
	for _, sl := range layout.Slots {
		if c.loader == layout.LoaderUBoot {
			out = append(out, slot.EnvFileName(sl))
			if sl == trial {
				for i := 1; i <= done; i++ {
					out = append(out, slot.MarkerName(sl, i))
				}
			}
			continue
		}
		n := slot.Name{Slot: sl}
		if sl == trial {
			n = slot.Name{Slot: sl, Counted: true, Left: abTries - done, Done: done}
		}
		out = append(out, n.FileName())
	}
	sort.Strings(out)
	return out
}

// abRootfs is the small test rootfs with /etc/ovroot-test/version, and
// with the marker that makes its init exit at once when broken.
func abRootfs(t *testing.T, arch layout.Arch, version string, broken bool) string {
	t.Helper()
	root := makeSmallRootfs(t, arch)
	dir := filepath.Join(root, "etc/ovroot-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "version"), []byte(version+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if broken {
		if err := os.WriteFile(filepath.Join(dir, "exit-at-once"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// withHealth gives a root a health check (the guest agent, which answers
// as /etc/ovroot-test/health says: "ok" or "fail: why").
func withHealth(t *testing.T, root, result string) string {
	t.Helper()
	agent, err := os.ReadFile(filepath.Join(root, "sbin/init"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, layout.HealthDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-test"), agent, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/ovroot-test/health"), []byte(result+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// buildBundle builds an update bundle of rootfs with the same image.toml
// as abImage (the image made alongside is dropped).
func buildBundle(t *testing.T, c abChain, rootfs string, edits ...func(*config.Image)) string {
	t.Helper()
	bundle := filepath.Join(t.TempDir(), "update.bundle")
	img := buildImageOpts(t, c.arch, rootfs, imagebuild.Options{Bundle: bundle}, func(im *config.Image) {
		c.image(im)
		for _, e := range edits {
			e(im)
		}
	})
	os.Remove(img.path)
	return bundle
}

// corruptBundle rewrites a bundle with its squashfs changed by corrupt
// and a manifest made for the corrupt bytes, signed by the trusted key a:
// a vendor's broken build with a valid checksum and signature, which only
// booting it can catch.
func corruptBundle(t *testing.T, bundle string, corrupt func(root []byte)) string {
	t.Helper()
	return rewriteBundle(t, bundle, "a", func(_ *slot.Manifest, root []byte) { corrupt(root) })
}

// rewriteBundle writes a copy of a bundle after edit changed its manifest
// or its root's bytes, signed by test key signer ("" = unsigned).
func rewriteBundle(t *testing.T, bundle, signer string, edit func(m *slot.Manifest, root []byte)) string {
	t.Helper()
	f, err := os.Open(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := slot.NewReader(f, slot.Trust{AllowUnsigned: true})
	if err != nil && strings.Contains(err.Error(), "does not trust") {
		f.Seek(0, io.SeekStart)
		r, err = slot.NewReader(f, trustAll(t))
	}
	if err != nil {
		t.Fatal(err)
	}
	var key *minisign.PrivateKey
	if signer != "" {
		k, err := slot.ReadPrivateKey(testKey(signer) + ".key")
		if err != nil {
			t.Fatal(err)
		}
		key = &k
	}
	members := map[string][]byte{}
	for {
		file, mr, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if members[file.Name], err = io.ReadAll(mr); err != nil {
			t.Fatal(err)
		}
	}
	m := r.Manifest
	edit(&m, members[slot.RootName])
	out := filepath.Join(t.TempDir(), "rewritten.bundle")
	w, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var srcs []slot.Source
	for _, name := range slot.BundleMembers {
		data := members[name]
		srcs = append(srcs, slot.Source{Name: name, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }})
	}
	if err := slot.WriteBundle(w, m, srcs, key); err != nil {
		t.Fatal(err)
	}
	return out
}

// trustAll trusts the three test keys.
func trustAll(t *testing.T) slot.Trust {
	var tr slot.Trust
	for _, n := range []string{"a", "b", "c"} {
		tr.Keys = append(tr.Keys, keyOf(t, n))
	}
	return tr
}

// keyOf is test key name's public key.
func keyOf(t *testing.T, name string) slot.Key {
	t.Helper()
	k, err := slot.ReadPublicKey(testKey(name) + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// flipBundle is a copy of a bundle with one bit flipped in member's bytes,
// at offset off from the member's start (negative: from its end).
func flipBundle(t *testing.T, bundle, member string, off int) string {
	t.Helper()
	data, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	body := bundleMember(t, bundle, member)
	i := bytes.Index(data, body)
	if i < 0 {
		t.Fatalf("%s: member %s not found in the file", bundle, member)
	}
	if off < 0 {
		off += len(body)
	}
	mask := byte(0x10)
	if member == slot.SigName {
		// A text file of base64: flip the case bit of the next
		// letter, which keeps it base64 (another byte of the
		// signature, not an unreadable file).
		for !('a' <= body[off] && body[off] <= 'z' || 'A' <= body[off] && body[off] <= 'Z') {
			off++
		}
		mask = 0x20
	}
	data[i+off] ^= mask
	out := filepath.Join(t.TempDir(), "flipped-"+member)
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// snapshot is what the host reads of a device's slot b and boot entries:
// the entry files with their bytes, and the hash of rootfs_b.
func snapshot(t *testing.T, img image) string {
	t.Helper()
	var b strings.Builder
	for _, e := range espEntries(t, img) {
		fmt.Fprintf(&b, "%s:\n%s\n", e, espFile(t, img, layout.EntriesDir+"/"+e))
	}
	h := sha256.New()
	h.Write([]byte(partitionBytes(t, img, layout.SlotB.Label(layout.RootLabel))))
	fmt.Fprintf(&b, "rootfs_b sha256 %x\n", h.Sum(nil))
	return b.String()
}

// partitionBytes reads one partition of an image.
func partitionBytes(t *testing.T, img image, label string) []byte {
	t.Helper()
	data, err := os.ReadFile(partition(t, img, label))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// abDevice is one two-slot device booted again and again from its disk.
type abDevice struct {
	t     *testing.T
	chain abChain
	img   image
	boots int  // QEMU runs so far
	net   bool // a virtio network card on QEMU's user network
}

// start starts one boot through the firmware, with the bundles (if any) as
// the next disks: /dev/vdb, /dev/vdc, ...
func (d *abDevice) start(bundles ...string) *qemu.VM {
	t := d.t
	t.Helper()
	cfg, cleanup, err := qemu.ForImageLoader(d.img.path, qemu.FirmwareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	for _, b := range bundles {
		if b != "" {
			cfg.Disks = append(cfg.Disks, b)
		}
	}
	if d.chain.arch != layout.ARM {
		// A hardware watchdog for trial_watchdog (Debian's armhf kernel
		// has no i6300esb driver); with -no-reboot its reset ends QEMU.
		cfg.Extra = append(cfg.Extra, "-device", "i6300esb", "-action", "watchdog=reset")
	}
	if d.net {
		// The guest reaches the host's 127.0.0.1 as 10.0.2.2.
		cfg.Extra = append(cfg.Extra, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
	}
	d.boots++
	return startVM(t, d.img, cfg)
}

// boot runs one boot: the guest agent's prompt (up=true), or QEMU ended
// first (the root failed and the kernel rebooted: up=false).
func (d *abDevice) boot(bundles ...string) (vm *qemu.VM, up bool) {
	t := d.t
	t.Helper()
	vm = d.start(bundles...)
	if _, err := vm.Expect(bootTimeout, "GUEST: ready"); err != nil {
		if vm.Exited() {
			return vm, false
		}
		t.Fatalf("boot %d: neither the guest nor a reboot: %v\n%s", d.boots, err, vm.Tail(40))
	}
	return vm, true
}

// mustBoot boots and fails the test when the guest does not come up.
func (d *abDevice) mustBoot(bundles ...string) *qemu.VM {
	d.t.Helper()
	vm, up := d.boot(bundles...)
	if !up {
		d.t.Fatalf("boot %d ended before the guest came up:\n%s", d.boots, vm.Tail(60))
	}
	return vm
}

var slotParamRE = regexp.MustCompile(`ovroot\.slot=([ab])\b`)

// runningSlot is the slot in the guest's /proc/cmdline.
func runningSlot(t *testing.T, vm *qemu.VM) layout.Slot {
	t.Helper()
	m := slotParamRE.FindStringSubmatch(guest(t, vm, "cat /proc/cmdline"))
	if m == nil {
		t.Fatalf("no ovroot.slot= in the guest's /proc/cmdline")
	}
	return layout.Slot(m[1])
}

// espEntries lists loader/entries on the image's boot partition, read by
// the host with mtools.
func espEntries(t *testing.T, img image) []string {
	t.Helper()
	out, err := exec.Command("mdir", "-b", "-i", espMtools(t, img), "::/"+layout.EntriesDir).CombinedOutput()
	if err != nil {
		t.Fatalf("mdir the boot entries: %v\n%s", err, out)
	}
	var names []string
	for _, l := range strings.Fields(string(out)) {
		names = append(names, filepath.Base(l))
	}
	sort.Strings(names)
	return names
}

// espMtools is the image's boot partition as mtools' -i names it.
func espMtools(t *testing.T, img image) string {
	t.Helper()
	start, _ := partRange(t, img, layout.BootLabel)
	return fmt.Sprintf("%s@@%d", img.path, start)
}

// espFile is a file on the image's boot partition, read by the host.
func espFile(t *testing.T, img image, name string) string {
	t.Helper()
	out, err := exec.Command("mtype", "-i", espMtools(t, img), "::/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("mtype %s: %v\n%s", name, err, out)
	}
	return string(out)
}

func wantEntries(t *testing.T, img image, want ...string) {
	t.Helper()
	got := espEntries(t, img)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("boot entries on the host's view of the ESP = %v, want %v", got, want)
	}
}

// upgrade/ARCH proves the A/B cycle on each UEFI chain: an upgrade to a
// good root switches slots and keeps the upper, mark-good makes it stay;
// a root whose init exits at once, and a root with corrupt blocks behind
// a valid checksum, are each tried at most abTries times, and the device
// comes back on the confirmed slot by itself, with status saying why.
//
// TestSlots runs the A/B tests as parallel subtests.
func TestSlots(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, c := range chainsFrom(t, "OVROOT_AB_UPGRADES", "x86_64,arm-uboot") {
		t.Run("upgrade/"+c.name(), func(t *testing.T) {
			t.Parallel()
			testUpgrade(t, c)
		})
	}
	// The power-cut run takes as long as the rest of TestSlots together.
	for _, c := range chainsFrom(t, "OVROOT_AB_POWERCUTS", "x86_64") {
		t.Run("powercuts/"+c.name(), func(t *testing.T) {
			t.Parallel()
			testSlotPowerCuts(t, c)
		})
	}
}

// chainsFrom is the chains named in the environment variable env
// (comma-separated names of slotChains, e.g. x86_64,arm64,arm-uboot), or
// in def. 2 cores run the default set within make test's time; the rest
// run by hand.
func chainsFrom(t *testing.T, env, def string) []abChain {
	names := def
	if s := os.Getenv(env); s != "" {
		names = s
	}
	var out []abChain
	for _, name := range strings.Split(names, ",") {
		i := slices.IndexFunc(slotChains, func(c abChain) bool { return c.name() == name })
		if i < 0 {
			t.Fatalf("%s: no chain %q (want x86_64, arm64 or arm-uboot)", env, name)
		}
		out = append(out, slotChains[i])
	}
	return out
}

func testUpgrade(t *testing.T, c abChain) {
	arch := c.arch
	img := buildImage(t, arch, abRootfs(t, arch, "1", false), c.image)
	// On the ARM chains the new root confirms itself (confirm_after); on
	// x86_64 the running system confirms it with mark-good.
	autoConfirm := arch != layout.X86_64
	// Release 2 trusts key b besides a (the keyring rotates with the
	// root); release 3 is signed by b alone.
	// Release 2 is a stacked root (issue 19's [[layer]]): its bundle's
	// root member carries both layers, through verity on x86_64.
	good := buildBundle(t, c, withHealth(t, abRootfs(t, arch, "2", false), "ok"), release("2"), func(im *config.Image) {
		im.Update.TrustedKeys = []string{testKey("a") + ".pub", testKey("b") + ".pub"}
		if autoConfirm {
			im.Init.ConfirmAfter = config.OffDuration(5 * time.Second)
		}
		im.Layer = []config.Layer{{Name: "base", Rootfs: im.Rootfs}, {Name: "site", Rootfs: layerTarball(t, []layerEntry{
			{h: tar.Header{Name: "etc/ovroot-test/site", Typeflag: tar.TypeReg, Mode: 0o644}, body: "site layer\n"}})}}
		im.Rootfs = ""
	})
	broken := buildBundle(t, c, abRootfs(t, arch, "3-init-exits", true), release("3"), func(im *config.Image) {
		im.Update.SignKey = testKey("b") + ".key"
	})
	// Bytes flipped between 10% and 90% of the squashfs: data blocks. The
	// superblock at the start and the tables at the end stay whole, so it
	// mounts, and the kernel finds the damage when the init runs.
	corrupt := corruptBundle(t, buildBundle(t, c, abRootfs(t, arch, "4-corrupt", false), release("4")), func(root []byte) {
		for i := len(root) / 10; i < len(root)*9/10; i += 512 {
			root[i] ^= 0xff
		}
	})
	// A root whose health check fails: confirm_after runs it and reboots
	// into the next try each time, never confirming.
	sick := buildBundle(t, c, withHealth(t, abRootfs(t, arch, "6-health-fails", false), "fail: uplink down"), release("6"), func(im *config.Image) {
		im.Init.ConfirmAfter = config.OffDuration(3 * time.Second)
	})
	// A root that hangs: the trial watchdog resets each try (not on 32-bit
	// ARM: the armhf kernel has no driver for QEMU's watchdog).
	hang := ""
	if arch != layout.ARM {
		root := abRootfs(t, arch, "7-hangs", false)
		if err := os.WriteFile(filepath.Join(root, "etc/ovroot-test/hang"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		hang = buildBundle(t, c, root, release("7"), func(im *config.Image) {
			im.Init.TrialWatchdog = config.OffDuration(10 * time.Second)
		})
	}
	// What the factory root must refuse, each made from the good bundle:
	// on /dev/vdc.. in that order, with what ovrootctl must say.
	refused := []struct{ bundle, want string }{
		{rewriteBundle(t, good, "", func(*slot.Manifest, []byte) {}), "the bundle is not signed, and this device installs only bundles signed by a key it trusts (" + keyOf(t, "a").ID() + " a.pub)"},
		{rewriteBundle(t, good, "c", func(*slot.Manifest, []byte) {}), "the bundle is signed by key " + keyOf(t, "c").ID() + ", which this device does not trust"},
		{flipBundle(t, good, slot.ManifestName, 30), "does not verify: its manifest or signature was changed after signing"},
		{flipBundle(t, good, slot.SigName, -30), "does not verify"},
		{flipBundle(t, good, slot.RootName, 70000), "bundle member root.squashfs: sha256"},
		{rewriteBundle(t, good, "a", func(m *slot.Manifest, _ []byte) { m.Version = "0.9" }), "the bundle's version 0.9 is older than the running root's version 1: refusing a downgrade"},
	}
	d := &abDevice{t: t, chain: c, img: img}
	if c.loader == layout.LoaderUBoot {
		wantEntries(t, img, slot.EnvFileName(layout.SlotA))
	} else {
		wantEntries(t, img, "ovroot-a.conf")
	}

	// Boot 1: the factory slot a, confirmed, release 1. Every bad bundle
	// is refused and leaves the entries and slot b as they were (the host
	// reads them while the guest runs: ovrootctl has unmounted the boot
	// partition by then); then a change in the upper, and the upgrade to
	// v2.
	before := snapshot(t, img)
	disks := []string{good}
	for _, r := range refused {
		disks = append(disks, r.bundle)
	}
	vm := d.mustBoot(disks...)
	if s := runningSlot(t, vm); s != layout.SlotA {
		t.Fatalf("factory boot runs slot %s, want a", s)
	}
	status := guest(t, vm, "exec /usr/bin/ovrootctl status")
	for _, w := range []string{"version:   1 running; highest confirmed none recorded yet", "trusts:    " + keyOf(t, "a").ID() + " a.pub\n"} {
		if !strings.Contains(status, w) {
			t.Errorf("factory status lacks %q:\n%s", w, status)
		}
	}
	for i, r := range refused {
		dev := fmt.Sprintf("/dev/vd%c", 'c'+i)
		out, err := guestErr(vm, "exec /usr/bin/ovrootctl upgrade "+dev)
		if err == nil || !strings.Contains(out, r.want) || !strings.Contains(out, "nothing was changed") {
			t.Errorf("ovrootctl upgrade %s (%s): %v\n%s\nwant refused: %q (nothing was changed)", dev, filepath.Base(r.bundle), err, out, r.want)
		}
	}
	if out, err := guestErr(vm, "exec /usr/bin/ovrootctl verify /dev/vdd"); err == nil || !strings.Contains(out, "does not trust") {
		t.Errorf("ovrootctl verify of a bundle signed by an untrusted key: %v\n%s", err, out)
	}
	if out := guest(t, vm, "exec /usr/bin/ovrootctl verify /dev/vdb"); !strings.Contains(out, "version 2") || !strings.Contains(out, "signed by trusted key "+keyOf(t, "a").ID()) || !strings.Contains(out, "ovrootctl upgrade would install it") {
		t.Errorf("ovrootctl verify of the good bundle:\n%s", out)
	}
	if after := snapshot(t, img); after != before {
		t.Errorf("refused bundles changed the device:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	guest(t, vm, "write /root/kept.txt made-on-v1")
	out := guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb")
	for _, w := range []string{"upgrade: writing slot b: 100%", "slot b holds build", fmt.Sprintf("(%d tries)", abTries), "upgrade: version 2, signed by trusted key " + keyOf(t, "a").ID()} {
		if !strings.Contains(out, w) {
			t.Errorf("ovrootctl upgrade output lacks %q:\n%s", w, out)
		}
	}
	powerOff(t, vm)
	wantEntries(t, img, c.entries(layout.SlotB, 0)...)

	// Boot 2: slot b on trial, v2's root, the upper kept.
	vm = d.mustBoot("")
	if autoConfirm {
		// First, so no command's output races the confirmer's line.
		expect(t, vm, "confirmed after 5s ("+c.confirmText()+")")
	}
	if s := runningSlot(t, vm); s != layout.SlotB {
		t.Fatalf("after the upgrade the device runs slot %s, want b", s)
	}
	if c.loader == layout.LoaderUBoot {
		// boot.scr said so, and told the init (ovroot.try=).
		if w := fmt.Sprintf("ovroot: slot b on trial: boot 1 of 0x%x", abTries); !strings.Contains(vm.Console(), w) {
			t.Errorf("U-Boot did not say %q", w)
		}
		if cl := guest(t, vm, "cat /proc/cmdline"); !strings.Contains(cl, fmt.Sprintf("ovroot.try=1/0x%x", abTries)) {
			t.Errorf("the trial boot's command line lacks ovroot.try=1/0x%x: %s", abTries, cl)
		}
	}
	if v := guest(t, vm, "cat /etc/ovroot-test/version"); v != "2\n" {
		t.Errorf("slot b's root says version %q, want 2", v)
	}
	if v := guest(t, vm, "cat /etc/ovroot-test/site"); v != "site layer\n" {
		t.Errorf("slot b's site layer: /etc/ovroot-test/site = %q", v)
	}
	if m := guest(t, vm, "mounts"); !regexp.MustCompile(`(?m)^/dev/dm-\d+ /run/ovroot/layers/site squashfs ro,`).MatchString(m) {
		t.Errorf("slot b's site layer is not mounted from a mapping:\n%s", m)
	}
	if v := guest(t, vm, "cat /root/kept.txt"); strings.TrimSpace(v) != "made-on-v1" {
		t.Errorf("the upper was not kept across the upgrade: /root/kept.txt = %q", v)
	}
	trialWant := "ON TRIAL (1 tries left)"
	if autoConfirm {
		trialWant = "confirmed (this boot started as a trial)"
	}
	status = guest(t, vm, "exec /usr/bin/ovrootctl status")
	for _, w := range []string{"slot:      b, build", trialWant, "upper:     made on build", "another build", "slot a: generation 1", "slot b: generation 2",
		"trusts:    " + keyOf(t, "a").ID() + " a.pub, " + keyOf(t, "b").ID() + " b.pub\n"} {
		if !strings.Contains(status, w) {
			t.Errorf("status on the trial boot lacks %q:\n%s", w, status)
		}
	}
	if autoConfirm {
		if out := guest(t, vm, "exec /usr/bin/ovrootctl mark-good"); !strings.Contains(out, "confirmed already") {
			t.Errorf("mark-good after confirm_after: %s", out)
		}
	} else {
		want := "confirmed: " + c.confirmText()
		if out := guest(t, vm, "exec /usr/bin/ovrootctl mark-good"); !strings.Contains(out, "slot b (build") || !strings.Contains(out, want) || !strings.Contains(out, "health: 1 health checks passed") {
			t.Errorf("mark-good: %s\nwant %q", out, want)
		}
	}
	if arch != layout.ARM {
		// The trial armed the watchdog; confirmed, the slot runs three
		// times trial_watchdog (20s) and is never reset.
		expect(t, vm, "ovroot: trial_watchdog: slot confirmed, watchdog stopped")
		if !strings.Contains(vm.Console(), "ovroot: watchdog armed: slot b resets unless confirmed within 20s") {
			t.Errorf("the trial boot did not arm the watchdog")
		}
		time.Sleep(60 * time.Second)
		if vm.Exited() {
			t.Fatalf("the confirmed slot was reset:\n%s", vm.Tail(20))
		}
		guest(t, vm, "cat /proc/uptime")
	}
	powerOff(t, vm)
	wantEntries(t, img, c.entries("", 0)...)
	if c.loader == layout.LoaderUBoot {
		if env := espFile(t, img, layout.EntriesDir+"/ovroot-b.env"); !strings.Contains(env, "ovroot_tries=0x0\n") {
			t.Errorf("ovroot-b.env after mark-good is not confirmed (tries 0):\n%s", env)
		}
	}

	// Boot 3: b stays, confirmed, version 2 the highest confirmed. The
	// factory release 1 (signed by a, trusted) is refused as a downgrade;
	// then the upgrade to release 3, signed by key b, which only release
	// 2's root trusts, to a root whose init exits at once.
	v1 := rewriteBundle(t, good, "a", func(m *slot.Manifest, _ []byte) { m.Version = "1" })
	vm = d.mustBoot(broken, v1)
	if s := runningSlot(t, vm); s != layout.SlotB {
		t.Fatalf("after mark-good the device runs slot %s, want b", s)
	}
	if status := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(status, "slot:      b, build") || !strings.Contains(status, ", confirmed") || !strings.Contains(status, "version:   2 running; highest confirmed 2\n") {
		t.Errorf("status after mark-good:\n%s", status)
	}
	before = snapshot(t, img)
	if out, err := guestErr(vm, "exec /usr/bin/ovrootctl upgrade /dev/vdc"); err == nil || !strings.Contains(out, "the bundle's version 1 is older than the running root's version 2 and than version 2, the highest this device ever confirmed: refusing a downgrade") {
		t.Errorf("ovrootctl upgrade of release 1 on release 2: %v\n%s", err, out)
	}
	if out, err := guestErr(vm, "exec /usr/bin/ovrootctl upgrade --allow-downgrade /dev/vdc"); err == nil || !strings.Contains(out, "this image does not allow downgrades") {
		t.Errorf("ovrootctl upgrade --allow-downgrade on an image that forbids it: %v\n%s", err, out)
	}
	if after := snapshot(t, img); after != before {
		t.Errorf("a refused downgrade changed the device:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if out := guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb"); !strings.Contains(out, "upgrade: version 3, signed by trusted key "+keyOf(t, "b").ID()) {
		t.Errorf("release 3 signed by the rotated-in key b:\n%s", out)
	}
	powerOff(t, vm)
	expectFallback(t, d, "init exits at once", "GUEST: exiting at once", "")

	// Then a root with corrupt blocks behind a valid checksum: the
	// kernel's squashfs finds them when the init runs, or, on a verity
	// chain, the init's check of every block finds the first one before
	// anything is mounted.
	vm = d.mustBoot(corrupt)
	guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb")
	powerOff(t, vm)
	corruptWant := "SQUASHFS error"
	if c.verity() {
		corruptWant = "ovroot: root integrity failure on " + layout.SlotA.Label(layout.RootLabel) + ": data block "
	}
	expectFallback(t, d, "corrupt squashfs", corruptWant, "")

	// Then a root that runs but whose health check fails: each trial boot
	// comes up, confirm_after runs the check, which fails, and the
	// confirmer reboots into the next try; the device ends on b.
	vm = d.mustBoot(sick)
	guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb")
	powerOff(t, vm)
	expectHealthFallback(t, d)

	if hang != "" {
		// Then a root that hangs: the watchdog resets every try, and the
		// device ends on b by itself.
		vm = d.mustBoot(hang)
		guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb")
		powerOff(t, vm)
		expectFallback(t, d, "root hangs", "ovroot: trial_watchdog: the slot was not confirmed within 10s: no longer feeding the watchdog", "")
	}

	if c.loader == layout.LoaderUBoot {
		// A trial slot whose kernel is gone (the host deletes it): boot.scr
		// counts the try, the load fails, and it boots the confirmed slot
		// in the same boot instead of stopping at U-Boot's prompt.
		vm = d.mustBoot(good)
		guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb")
		powerOff(t, vm)
		if out, err := exec.Command("mdel", "-i", espMtools(t, img), "::/slot-a/"+layout.KernelFile).CombinedOutput(); err != nil {
			t.Fatalf("mdel slot-a's kernel: %v\n%s", err, out)
		}
		vm = d.mustBoot("")
		if s := runningSlot(t, vm); s != layout.SlotB {
			t.Errorf("with slot a's kernel gone the device runs slot %s, want b", s)
		}
		for _, w := range []string{"ovroot: slot a on trial: boot 1 of", "ovroot: booting slot a failed", "ovroot: booting slot b\n"} {
			if !strings.Contains(strings.ReplaceAll(vm.Console(), "\r", ""), w) {
				t.Errorf("U-Boot did not say %q", w)
			}
		}
		if status := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(status, "slot a: generation 6, build") || !strings.Contains(status, fmt.Sprintf("on trial (%d of %d tries left)", abTries-1, abTries)) {
			t.Errorf("status with slot a's kernel gone:\n%s", status)
		}
		powerOff(t, vm)
		wantEntries(t, img, c.entries(layout.SlotA, 1)...)
	}
	if arch == layout.X86_64 {
		// A root changed after the build (its first block zeroed) in a
		// bundle signed by a trusted key: the verity tree and the root
		// hash the manifest carries find it at boot; without verity, the
		// root does not mount. Either is the init's own failure path,
		// which records why for status.
		lastFailure := "last failure: root partition /dev/vda2 (PARTLABEL=" + layout.SlotA.Label(layout.RootLabel) + ") holds unknown content, not squashfs"
		if c.verity() {
			lastFailure = "last failure: root integrity failure on " + layout.SlotA.Label(layout.RootLabel) + ": data block 0 does not match the hash tree"
		}
		vm = d.mustBoot(corruptBundle(t, buildBundle(t, c, abRootfs(t, arch, "5-unmountable", false), release("5")), func(root []byte) {
			clear(root[:4096])
		}))
		// --wipe asks for a factory reset at the next boot as well: the
		// highest confirmed version (2) must survive it.
		guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb --wipe")
		powerOff(t, vm)
		expectFallback(t, d, "tampered root", "ovroot: trial boot of slot a (build", lastFailure, func(vm *qemu.VM) {
			if _, err := guestErr(vm, "cat /root/kept.txt"); err == nil {
				t.Errorf("/root/kept.txt survived the factory reset upgrade --wipe asked for")
			}
			if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "version:   2 running; highest confirmed 2\n") || !strings.Contains(st, "last reset: ") {
				t.Errorf("after the factory reset the highest confirmed version is not 2:\n%s", st)
			}
		})
	}
	if c.verity() {
		expectGiveUp(t, d, good)
	}
	fsck(t, img, layout.DataLabel)
	fsckFAT(t, img)
}

// expectGiveUp: a confirmed slot whose root goes bad on the disk after
// it was confirmed (a byte of rootfs_a flipped by the host) is given up
// at its next boot for the other confirmed slot: the init names the bad
// block, marks the entry with no tries left and reboots; the device then
// runs slot b by itself and status says why slot a was left.
func expectGiveUp(t *testing.T, d *abDevice, good string) {
	t.Helper()
	vm := d.mustBoot(good)
	guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb")
	powerOff(t, vm)
	vm = d.mustBoot()
	if s := runningSlot(t, vm); s != layout.SlotA {
		t.Fatalf("give up: after the upgrade the device runs slot %s, want a on trial", s)
	}
	if out := guest(t, vm, "exec /usr/bin/ovrootctl mark-good"); !strings.Contains(out, "slot a (build") {
		t.Fatalf("give up: mark-good: %s", out)
	}
	powerOff(t, vm)
	confirmed := []string{slot.Name{Slot: layout.SlotA}.FileName(), slot.Name{Slot: layout.SlotB}.FileName()}
	wantEntries(t, d.img, confirmed...)

	start, _ := partRange(t, d.img, layout.SlotA.Label(layout.RootLabel))
	const block = 3
	flipByte(t, d.img.path, start+block*verity.BlockSize+123)
	vm, up := d.boot()
	if up {
		t.Fatalf("give up: the damaged slot a came up:\n%s", vm.Tail(40))
	}
	why := fmt.Sprintf("root integrity failure on %s: data block %d does not match the hash tree", layout.SlotA.Label(layout.RootLabel), block)
	for _, w := range []string{"ovroot: " + why, "is damaged: given up (ovroot-a.conf is now ovroot-a+0-1.conf); rebooting into slot b"} {
		if !strings.Contains(vm.Console(), w) {
			t.Errorf("give up: the boot of the damaged slot did not say %q:\n%s", w, vm.Tail(30))
		}
	}
	wantEntries(t, d.img, slot.Name{Slot: layout.SlotA, Counted: true, Left: 0, Done: 1}.FileName(), confirmed[1])
	vm = d.mustBoot()
	if s := runningSlot(t, vm); s != layout.SlotB {
		t.Fatalf("give up: after giving up slot a the device runs slot %s, want b", s)
	}
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "was confirmed, then failed at boot: "+why) || !strings.Contains(st, "slot b: generation") {
		t.Errorf("give up: status on slot b does not say why slot a was left:\n%s", st)
	}
	powerOff(t, vm)
	t.Logf("give up: confirmed slot a with block %d damaged was given up for slot b (boot %d)", block, d.boots)
}

// expectFallback boots a device whose slot a was just upgraded to a root
// that cannot run: each trial boot must end in a reboot, at most abTries
// of them, and then the device runs slot b again by itself, status naming
// slot a abandoned (and statusWant, if set). consoleWant must be on the
// console of every failed boot: what made it fail.
func expectFallback(t *testing.T, d *abDevice, what, consoleWant, statusWant string, checks ...func(vm *qemu.VM)) {
	t.Helper()
	failed := 0
	sawConsole := true
	for {
		vm, up := d.boot("")
		if up {
			if s := runningSlot(t, vm); s != layout.SlotB {
				t.Fatalf("%s: the guest came up on slot %s, want the confirmed b", what, s)
			}
			status := guest(t, vm, "exec /usr/bin/ovrootctl status")
			want := "slot a: ABANDONED: build"
			if !strings.Contains(status, want) || !strings.Contains(status, fmt.Sprintf("tried %d times and never confirmed", abTries)) || !strings.Contains(status, statusWant) {
				t.Errorf("%s: status after the fallback lacks %q / tried %d times:\n%s", what, want, abTries, status)
			}
			for _, check := range checks {
				check(vm)
			}
			powerOff(t, vm)
			break
		}
		failed++
		if !strings.Contains(vm.Console(), consoleWant) {
			sawConsole = false
		}
		if failed > abTries {
			t.Fatalf("%s: %d failed boots, more than the %d tries:\n%s", what, failed, abTries, vm.Tail(40))
		}
	}
	if failed != abTries {
		t.Errorf("%s: %d failed trial boots before the fallback, want %d", what, failed, abTries)
	}
	if !sawConsole {
		t.Errorf("%s: a failed boot did not say %q on the console", what, consoleWant)
	}
	t.Logf("%s: %d trial boots failed, then slot b again (boot %d)", what, failed, d.boots)
	wantEntries(t, d.img, d.chain.entries(layout.SlotA, abTries)...)
}

// expectHealthFallback boots a device whose slot a holds a root whose
// health check fails: every trial boot must come up, fail the check and
// reboot, abTries times, and then the device runs slot b again with slot a
// abandoned for that reason.
func expectHealthFallback(t *testing.T, d *abDevice) {
	t.Helper()
	const why = "health check 10-test FAILED (exit status 1): uplink down"
	for failed := 0; ; failed++ {
		if failed > abTries {
			t.Fatalf("health: %d trial boots, more than the %d tries", failed, abTries)
		}
		vm, up := d.boot()
		if !up {
			t.Fatalf("health: boot %d: the root did not come up (it runs; only its check fails):\n%s", d.boots, vm.Tail(40))
		}
		// The slot from the kernel's command line on the console: a
		// guest command could race the confirmer's reboot.
		m := slotParamRE.FindStringSubmatch(vm.Console())
		if m == nil {
			t.Fatalf("health: boot %d: no ovroot.slot= on the console", d.boots)
		}
		if layout.Slot(m[1]) == layout.SlotB {
			if failed != abTries {
				t.Errorf("health: %d trial boots before the fallback, want %d", failed, abTries)
			}
			status := guest(t, vm, "exec /usr/bin/ovrootctl status")
			if !strings.Contains(status, "slot a: ABANDONED") || !strings.Contains(status, why) {
				t.Errorf("health: status after the fallback lacks slot a abandoned for %q:\n%s", why, status)
			}
			powerOff(t, vm)
			wantEntries(t, d.img, d.chain.entries(layout.SlotA, abTries)...)
			t.Logf("health: %d trial boots failed their check, then slot b again (boot %d)", failed, d.boots)
			return
		}
		// The confirmer runs the check 3s after the root started, then
		// reboots: QEMU (-no-reboot) ends.
		expect(t, vm, "ovroot: confirm_after: slot a stays on trial: "+why)
		if err := vm.Wait(bootTimeout); err != nil {
			t.Fatalf("health: the failed check did not reboot: %v", err)
		}
		if strings.Contains(vm.Console(), ") confirmed after ") {
			t.Fatalf("health: a root whose check fails was confirmed:\n%s", vm.Tail(30))
		}
	}
}

// copyDisk copies a device's disk (sparse: the images are mostly holes)
// into a new device.
func (d *abDevice) copyDisk(name string) *abDevice {
	t := d.t
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".img")
	if b, err := exec.Command("cp", "--sparse=always", d.img.path, out).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", d.img.path, err, b)
	}
	return &abDevice{t: t, chain: d.chain, img: image{arch: d.img.arch, path: out}, net: d.net}
}

// cutAfter kills QEMU (the power cut) after delay.
func cutAfter(vm *qemu.VM, delay time.Duration) {
	time.Sleep(delay)
	vm.Kill()
}

var highestRE = regexp.MustCompile(`highest confirmed (none recorded yet|1|2)\n`)

// settle boots a device after a power cut until it runs a root: it must
// come up within abTries+1 boots on slot a (the old root: the upgrade did
// not finish or its trial was abandoned) or on slot b (the new root),
// which a trial boot confirms with mark-good. The upper's file must be
// there either way. It returns the slot it settled on.
func settle(t *testing.T, d *abDevice, what string) layout.Slot {
	t.Helper()
	for failed := 0; ; failed++ {
		if failed > abTries {
			t.Fatalf("%s: %d boots in a row built no root: the device boots neither slot", what, failed)
		}
		vm, up := d.boot("")
		if !up {
			continue
		}
		s := runningSlot(t, vm)
		if v := guest(t, vm, "cat /root/kept.txt"); strings.TrimSpace(v) != "made-on-v1" {
			t.Errorf("%s: /root/kept.txt = %q after the cut", what, v)
		}
		want := map[layout.Slot]string{layout.SlotA: "1\n", layout.SlotB: "2\n"}[s]
		if v := guest(t, vm, "cat /etc/ovroot-test/version"); v != want {
			t.Errorf("%s: slot %s's root says version %q, want %q", what, s, v, want)
		}
		// The upgrade records the running version 1 as confirmed at its
		// end, the mark-good of slot b 2: a cut leaves a whole record.
		status := guest(t, vm, "exec /usr/bin/ovrootctl status")
		if !highestRE.MatchString(status) || strings.Contains(status, "is damaged") {
			t.Errorf("%s: the highest confirmed version is not none, 1 or 2 after the cut:\n%s", what, status)
		}
		if s == layout.SlotB {
			if strings.Contains(status, "ON TRIAL") {
				guest(t, vm, "exec /usr/bin/ovrootctl mark-good")
			}
		}
		powerOff(t, vm)
		if got, want := espEntries(t, d.img), d.chain.entries("", 0); s == layout.SlotB && !slices.Equal(got, want) {
			t.Errorf("%s: settled on slot b, but the ESP has %v, not %v", what, got, want)
		}
		t.Logf("%s: settled on slot %s after %d failed boots", what, s, failed)
		return s
	}
}

// powercuts/x86_64 cuts the power (QEMU killed) at seeded moments: 10
// during `ovrootctl upgrade` and the first trial boot, after each of which
// the device must boot the old slot or the new one (confirmed then),
// never neither, with a data partition e2fsck finds clean; and 20 during
// boots of a confirmed slot, which must never fall back.
// OVROOT_AB_SEED replays a run.
func testSlotPowerCuts(t *testing.T, c abChain) {
	arch := c.arch
	seed := testenv.Int(t, "OVROOT_AB_SEED", time.Now().UnixNano(), 0)
	t.Logf("A/B power cuts: seed %d (replay: OVROOT_AB_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	img := buildImage(t, arch, abRootfs(t, arch, "1", false), c.image)
	bundle := buildBundle(t, c, abRootfs(t, arch, "2", false), release("2"))

	// The devices the cuts start from: after the first boot (upper file
	// made), and after a complete upgrade.
	base := &abDevice{t: t, chain: c, img: img}
	vm := base.mustBoot("")
	guest(t, vm, "write /root/kept.txt made-on-v1")
	powerOff(t, vm)
	upgraded := base.copyDisk("upgraded")
	vm = upgraded.mustBoot(bundle)
	start := time.Now()
	guest(t, vm, "exec /usr/bin/ovrootctl upgrade /dev/vdb")
	upgradeTook := time.Since(start)
	powerOff(t, vm)
	vm = upgraded.copyDisk("measure").start("")
	start = time.Now()
	expect(t, vm, "GUEST: ready")
	bootTook := time.Since(start)
	vm.Kill()
	t.Logf("upgrade took %s, a trial boot to the guest %s", upgradeTook.Round(time.Millisecond), bootTook.Round(time.Millisecond))

	settled := map[layout.Slot]int{}
	var fatAfterCuts []string
	for i := 0; i < 10; i++ {
		var d *abDevice
		var what string
		if i%2 == 0 {
			d = base.copyDisk(fmt.Sprintf("cut%d", i))
			vm := d.mustBoot(bundle)
			// Up to a quarter past the measured time: the last steps
			// (the entry) and just after are moments too.
			delay := time.Duration(rng.Int63n(int64(upgradeTook + upgradeTook/4)))
			what = fmt.Sprintf("cut %d, %s into ovrootctl upgrade", i, delay.Round(time.Millisecond))
			if err := vm.Send("exec /usr/bin/ovrootctl upgrade /dev/vdb"); err != nil {
				t.Fatal(err)
			}
			cutAfter(vm, delay)
		} else {
			d = upgraded.copyDisk(fmt.Sprintf("cut%d", i))
			delay := time.Duration(rng.Int63n(int64(bootTook)))
			what = fmt.Sprintf("cut %d, %s into the first trial boot", i, delay.Round(time.Millisecond))
			cutAfter(d.start(""), delay)
		}
		settled[settle(t, d, what)]++
		fsck(t, d.img, layout.DataLabel)
		// FAT has no journal: a cut while ovrootctl has the boot partition
		// mounted read-write leaves its dirty bit set (and may leave lost
		// clusters). That is reported, not failed: what must hold is
		// above, whole entries and a device that boots.
		if findings, _ := fatFindings(t, d.img); len(findings) > 0 {
			fatAfterCuts = append(fatAfterCuts, fmt.Sprintf("cut %d: %s", i, strings.Join(findings, "; ")))
		}
	}
	t.Logf("after 10 cuts: %d settled on the old slot a, %d on the new slot b", settled[layout.SlotA], settled[layout.SlotB])
	t.Logf("fsck.fat -n on the boot partition after the 10 cuts: %d with findings%s", len(fatAfterCuts), strings.Join(append([]string{""}, fatAfterCuts...), "\n  "))

	// A confirmed slot b, cut 20 times at any moment of its boot.
	d := upgraded.copyDisk("confirmed")
	if settle(t, d, "confirming b") != layout.SlotB {
		t.Fatal("the upgraded device did not come up on slot b")
	}
	for i := 0; i < 20; i++ {
		cutAfter(d.start(""), time.Duration(rng.Int63n(int64(bootTook))))
	}
	vm = d.mustBoot("")
	if s := runningSlot(t, vm); s != layout.SlotB {
		t.Errorf("after 20 power cuts the confirmed slot b gave way to slot %s", s)
	}
	if status := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(status, "slot:      b, build") || !strings.Contains(status, ", confirmed") || strings.Contains(status, "ABANDONED") {
		t.Errorf("status after 20 cuts of a confirmed slot:\n%s", status)
	}
	powerOff(t, vm)
	wantEntries(t, d.img, c.entries("", 0)...)
	fsck(t, d.img, layout.DataLabel)
	fsckFAT(t, d.img)
}
