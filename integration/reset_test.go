package integration

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/manifest"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

const (
	keptDir     = "/etc/dropbear"
	keptFile    = "/etc/dropbear/host_key"
	factoryKeys = "ssh-ed25519 AAAA factory\n"
)

// dirty makes the changes a factory reset must undo: hidden files and
// directories, a changed factory file, a whiteout, an opaque directory, an
// xattr on a copied-up file, many new files, and a file in the keep-list.
func dirty(t *testing.T, vm *qemu.VM, tag string) {
	t.Helper()
	for _, c := range []string{
		"write " + keptFile + " key-" + tag,
		"write /root/.ssh/authorized_keys user-key-" + tag,
		"write /root/.config/.hidden/secret " + tag,
		"write /.top-level-dotfile " + tag,
		"rm " + factoryConf,
		"rm /data/d05",
		"write /data/d05/only-this.txt " + tag,
		"setxattr /etc/hostname user.changed " + tag,
		"fill 150",
	} {
		guest(t, vm, c)
	}
}

// checkFactory asserts the merged root equals the factory root except for
// the kept path (a manifest of both, contents hashed), and the upper holds
// the kept path and nothing else.
func checkFactory(t *testing.T, vm *qemu.VM, tag string) {
	t.Helper()
	checkFactoryQuick(t, vm, tag)
	// Other console output (the background trash collector) may be mixed
	// in: only the diff's own lines count.
	diff := guest(t, vm, "diff-root")
	var diffLines []string
	for _, l := range strings.Split(diff, "\n") {
		if strings.HasPrefix(l, "+ ") || strings.HasPrefix(l, "- ") {
			diffLines = append(diffLines, strings.Join(strings.Fields(l)[:2], " "))
		}
	}
	if got, want := strings.Join(diffLines, ", "), "+ etc/dropbear, + etc/dropbear/host_key"; got != want ||
		!strings.Contains(diff, "root differs from rom in 2 entries") {
		t.Errorf("merged root against /rom: %q, want only the kept path %q\n%s", got, want, diff)
	}
}

// checkFactoryQuick is checkFactory without the whole-root manifest: the
// upper holds only the kept path (which by overlayfs semantics makes the
// merged root the factory root), and the files the reset must restore.
func checkFactoryQuick(t *testing.T, vm *qemu.VM, tag string) {
	t.Helper()
	upper := guest(t, vm, "manifest-full /overlay/upper")
	var paths []string
	for _, l := range strings.Split(strings.TrimSpace(upper), "\n") {
		paths = append(paths, strings.Fields(l)[0])
	}
	if got, want := strings.Join(paths, " "), ". etc etc/dropbear etc/dropbear/host_key"; got != want {
		t.Errorf("upper after reset holds %q, want only the kept path: %q\n%s", got, want, upper)
	}
	checks := []struct{ cmd, want string }{
		{"cat " + keptFile, "key-" + tag + "\n"},
		{"cat /root/.ssh/authorized_keys", factoryKeys},
		{"cat " + factoryConf, factoryContent},
		{"exists /root/.config", "/root/.config exists=false\n"},
		{"exists /.top-level-dotfile", "/.top-level-dotfile exists=false\n"},
		{"exists /var/fill", "/var/fill exists=false\n"},
		{"exists /data/d05/f042.txt", "/data/d05/f042.txt exists=true\n"},
		{"exists /data/d05/only-this.txt", "/data/d05/only-this.txt exists=false\n"},
	}
	for _, c := range checks {
		if got := guest(t, vm, c.cmd); got != c.want {
			t.Errorf("after reset, %s = %q, want %q", c.cmd, got, c.want)
		}
	}
	if got := guest(t, vm, "getxattr /etc/hostname user.changed"); !strings.HasPrefix(got, "none") {
		t.Errorf("xattr set before the reset survived: %q", got)
	}
}

// resetImage is a tarball rootfs's image with keptDir on the reset's
// keep-list, its factory manifest as the host computes it, and that
// manifest's plain entries (what /rom must list).
func resetImage(t *testing.T, arch layout.Arch, edit func(*config.Image)) (image, []manifest.Entry, []manifest.Entry) {
	rootfs := makeSmallRootfsTar(t, arch)
	factory := factoryManifest(t, rootfs)
	img := buildImage(t, arch, rootfs, func(im *config.Image) {
		im.Init.Reset.Keep = []string{keptDir}
		if edit != nil {
			edit(im)
		}
	})
	return img, factory, plain(factory)
}

// testFactoryResetCmdline is the factory reset by kernel command line on
// the arches where TestFactoryReset runs nothing else (32-bit ARM): a used
// device, booted with ovroot.reset=1, comes up with the factory root the
// host computed and the kept path; /rom is untouched; the next boot does
// not reset again. On testArches testFactoryReset checks the same (its
// step 3).
func testFactoryResetCmdline(t *testing.T, arch layout.Arch) {
	img, factory, want := resetImage(t, arch, nil)

	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	dirty(t, vm, "1")
	powerOff(t, vm)

	vm = boot(t, img, withCmdline("ovroot.reset=1"))
	expect(t, vm, "ovroot: factory reset (trigger=cmdline, kept 1 paths) in")
	expect(t, vm, "GUEST: ready")
	checkFactory(t, vm, "1")
	checkFactoryFull(t, vm, factory)
	checkRom(t, vm, want)
	guest(t, vm, "write "+afterResetMarker+" written-after-the-reset")
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)

	vm = boot(t, img)
	expect(t, vm, "GUEST: ready")
	if strings.Contains(vm.Console(), "factory reset (trigger=") {
		t.Errorf("a boot without a trigger reset the device:\n%s", vm.Tail(60))
	}
	checkMarker(t, vm)
	powerOff(t, vm)
}

// TestFactoryReset resets through each trigger in turn on one disk:
// ovrootctl (after a cancelled request), the kernel command line, and the
// reset button pressed through a virtio keyboard.
// On the other arches (32-bit ARM) it is the cmdline reset alone.
func TestFactoryReset(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range allArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			if slices.Contains(otherArches, arch) {
				testFactoryResetCmdline(t, arch)
				return
			}
			testFactoryReset(t, arch)
		})
	}
}

func testFactoryReset(t *testing.T, arch layout.Arch) {
	img, factory, want := resetImage(t, arch, func(im *config.Image) {
		im.Modules = append(im.Modules, "virtio_input", "evdev")
		im.Init.Reset.ButtonKey = "KEY_F12"
		im.Init.Reset.ButtonWindow = config.Duration(8 * time.Second)
		im.Init.Reset.ButtonHold = config.Duration(time.Second)
	})
	kbd := func() (bootOpt, string) {
		sock := filepath.Join(t.TempDir(), "qmp.sock")
		return withKeyboard(sock), sock
	}

	// 1: use the device, then ask for a reset, change our mind, ask again.
	opt, _ := kbd()
	vm := boot(t, img, opt)
	expect(t, vm, "GUEST: ready")
	dirty(t, vm, "1")
	guest(t, vm, "exec /usr/bin/ovrootctl factory-reset")
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "PENDING factory reset (trigger=ovrootctl") {
		t.Errorf("status after factory-reset:\n%s", st)
	}
	if out := guest(t, vm, "exec /usr/bin/ovrootctl factory-reset --cancel"); !strings.Contains(out, "cancelled") {
		t.Errorf("cancel: %s", out)
	}
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); strings.Contains(st, "PENDING") {
		t.Errorf("status after --cancel still pending:\n%s", st)
	}
	// --reboot: the guest reboots, which ends QEMU (-no-reboot).
	if err := vm.Send("exec /usr/bin/ovrootctl factory-reset --reboot"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(bootTimeout); err != nil {
		t.Fatalf("ovrootctl factory-reset --reboot did not reboot: %v", err)
	}

	// 2: the request is honoured before the overlay is mounted.
	opt, _ = kbd()
	vm = boot(t, img, opt)
	expect(t, vm, "ovroot: factory reset (trigger=ovrootctl, kept 1 paths) in")
	expect(t, vm, "GUEST: ready")
	checkFactory(t, vm, "1")
	checkFactoryFull(t, vm, factory)
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !regexp.MustCompile(`last reset: \S+ \(trigger=ovrootctl, kept: /etc/dropbear, \d+ ms\)`).MatchString(st) {
		t.Errorf("status lacks the last reset:\n%s", st)
	}
	dirty(t, vm, "2")
	powerOff(t, vm)

	// 3: the kernel command line.
	opt, _ = kbd()
	vm = boot(t, img, opt, withCmdline("ovroot.reset=1"))
	expect(t, vm, "ovroot: factory reset (trigger=cmdline, kept 1 paths) in")
	expect(t, vm, "GUEST: ready")
	checkFactory(t, vm, "2")
	checkFactoryFull(t, vm, factory)
	dirty(t, vm, "3")
	powerOff(t, vm)

	// 4: the reset button, pressed once the init watches it and held.
	opt, sock := kbd()
	vm = boot(t, img, opt)
	expect(t, vm, "ovroot: reset button: hold KEY_F12")
	q, err := qemu.DialQMP(sock, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.KeyDown("f12", true); err != nil {
		t.Fatal(err)
	}
	expect(t, vm, "ovroot: reset button held")
	expect(t, vm, "ovroot: factory reset (trigger=button, kept 1 paths) in")
	expect(t, vm, "GUEST: ready")
	q.KeyDown("f12", false)
	checkFactory(t, vm, "3")
	checkFactoryFull(t, vm, factory)
	// The factory root itself was never touched.
	checkRom(t, vm, want)
	guest(t, vm, "write "+afterResetMarker+" written-after-the-reset")
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)

	// 5: the next boot does not reset again, silently or not.
	opt, _ = kbd()
	vm = boot(t, img, opt)
	expect(t, vm, "GUEST: ready")
	if strings.Contains(vm.Console(), "factory reset (trigger=") {
		t.Errorf("a boot without a trigger reset the device:\n%s", vm.Tail(60))
	}
	checkMarker(t, vm)
	powerOff(t, vm)
}

// factoryManifest is the manifest, with owners, xattrs and hard links, of
// the root a rootfs tarball gives, computed from the tarball alone: the
// image build adds nothing to it (it has the mount points and its own
// ovrootctl).
func factoryManifest(t *testing.T, tarball string) []manifest.Entry {
	t.Helper()
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, err := manifest.FromTar(f)
	if err != nil {
		t.Fatalf("%s: %v", tarball, err)
	}
	return entries
}

// plain is a manifest without owners, xattrs and hard links, as Walk gives.
func plain(entries []manifest.Entry) []manifest.Entry {
	out := make([]manifest.Entry, len(entries))
	for i, e := range entries {
		e.Ext = nil
		out[i] = e
	}
	return out
}

// mergedRootSkips are left out of the merged root's comparison with the
// factory root: the mount points (the guest agent's mountPoint) and the
// kept path, which a reset keeps and the factory root lacks.
var mergedRootSkips = []string{"proc", "sys", "dev", "run", "tmp", "rom", "overlay", strings.TrimPrefix(keptDir, "/")}

// checkFactoryFull compares the guest's manifest of the merged root, with
// owners, xattrs and hard links, with the one the host computed from the
// rootfs tarball: not with the guest's own /rom, which a build that lost
// an owner or a link would match just as well. A mismatch prints the
// differing lines (-want +got).
func checkFactoryFull(t *testing.T, vm *qemu.VM, factory []manifest.Entry, skip ...string) {
	t.Helper()
	checkTreeFull(t, vm, "/", factory, skip...)
}

// checkTreeFull is checkFactoryFull of the guest's tree at dir (a stacked
// root's /rom, the merged layers).
func checkTreeFull(t *testing.T, vm *qemu.VM, dir string, factory []manifest.Entry, skip ...string) {
	t.Helper()
	var want []manifest.Entry
	skips := mergedRootSkips
	if dir != "/" {
		skips = nil // no mount points below dir: the caller lists what is there
	}
	for _, e := range factory {
		skipped := false
		for _, s := range append(skips, skip...) {
			if e.Path == s || strings.HasPrefix(e.Path, s+"/") {
				skipped = true
			}
		}
		if !skipped {
			want = append(want, e)
		}
	}
	args := dir + " " + strings.Join(append([]string{strings.TrimPrefix(keptDir, "/")}, skip...), " ")
	if dir != "/" {
		args = dir + " " + strings.Join(skip, " ")
	}
	// Kernel messages may be mixed into the console output: only the
	// manifest line counts.
	out := guest(t, vm, "manifest-v2 "+args)
	got := regexp.MustCompile(`manifest-v2 entries=\d+ digest=[0-9a-f]+`).FindString(out)
	wantLine := "manifest-v2 entries=" + strconv.Itoa(len(want)) + " digest=" + manifest.Digest(want)
	if got == wantLine {
		return
	}
	full := guest(t, vm, "manifest-full-v2 "+args)
	gotLines := map[string]bool{}
	for _, l := range strings.Split(full, "\n") {
		if strings.Contains(l, " owner=") {
			gotLines[l] = true
		}
	}
	var diff []string
	for _, e := range want {
		if l := e.Line(); gotLines[l] {
			delete(gotLines, l)
		} else {
			diff = append(diff, "-"+l)
		}
	}
	for l := range gotLines {
		diff = append(diff, "+"+l)
	}
	sort.Strings(diff)
	t.Errorf("the guest's %s is not the factory root the host computed from the rootfs: %q, want %q\n(-want +got, %d lines):\n%s",
		dir, got, wantLine, len(diff), strings.Join(diff, "\n"))
}

// afterResetMarker is written after a reset; the boot after must keep it.
const afterResetMarker = "/etc/after-reset.txt"

// checkMarker: the file written after the reset survived a power-off and
// a boot, so that boot did not reset the device a second time.
func checkMarker(t *testing.T, vm *qemu.VM) {
	t.Helper()
	if got := guest(t, vm, "cat "+afterResetMarker); got != "written-after-the-reset\n" {
		t.Errorf("after the reset and a power-off, %s = %q, want it kept (a second reset?)", afterResetMarker, got)
	}
}

// TestResetPowerCut fills the upper, requests a reset, and cuts the power
// (kills QEMU) at seeded random moments of the reset, slowed down with
// ovroot.reset_step_delay so the moments spread over every step. Every
// boot after a cut must come up with the factory root and the kept path.
// OVROOT_RESET_SEED replays a run; OVROOT_RESET_CUTS sets the number of cuts.
func TestResetPowerCut(t *testing.T) {
	requireTools(t)
	t.Parallel()
	seed := testenv.Int(t, "OVROOT_RESET_SEED", time.Now().UnixNano(), 0)
	cuts := int(testenv.Int(t, "OVROOT_RESET_CUTS", 10, 1))
	t.Logf("power-cut seed %d, %d cuts per arch (replay: OVROOT_RESET_SEED=%d)", seed, cuts, seed)
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			testResetPowerCut(t, arch, seed, cuts)
		})
	}
}

const stepDelay = 150 * time.Millisecond

func testResetPowerCut(t *testing.T, arch layout.Arch, seed int64, cuts int) {
	rng := rand.New(rand.NewSource(seed))
	img := buildImage(t, arch, makeSmallRootfs(t, arch), func(im *config.Image) {
		im.Init.Reset.Keep = []string{keptDir}
	})
	// The reset takes about 10 delayed steps; cut anywhere in them, and a
	// little after (the trash collector).
	window := 11 * stepDelay
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	stepRE := regexp.MustCompile(`factory reset step (\S+)`)
	var table []string
	landed := map[string]bool{} // reset steps a cut landed in
	for i := 1; i <= cuts; i++ {
		tag := fmt.Sprintf("cut%d", i)
		dirty(t, vm, tag)
		guest(t, vm, "exec /usr/bin/ovrootctl factory-reset")
		powerOff(t, vm)

		vm = boot(t, img, withCmdline("ovroot.reset_step_delay="+stepDelay.String()))
		expect(t, vm, "ovroot: factory reset (trigger=ovrootctl): starting")
		at := time.Duration(rng.Int63n(int64(window)))
		time.Sleep(at)
		vm.Kill()
		vm.Wait(time.Minute)
		last := "before the first step"
		if m := stepRE.FindAllStringSubmatch(vm.Console(), -1); len(m) > 0 {
			last = "in or after step " + m[len(m)-1][1]
		}
		if strings.Contains(vm.Console(), "ovroot: factory reset (trigger=ovrootctl, kept") {
			last = "after the reset finished"
		} else if len(stepRE.FindAllStringSubmatch(vm.Console(), -1)) > 0 {
			landed[last] = true
		}
		table = append(table, fmt.Sprintf("cut %2d at +%4d ms: %s", i, at.Milliseconds(), last))

		vm = boot(t, img)
		expect(t, vm, "ovroot: root ready in")
		expect(t, vm, "GUEST: ready")
		checkFactoryQuick(t, vm, tag)
		if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); strings.Contains(st, "PENDING") || !strings.Contains(st, "PERSISTENT") {
			t.Errorf("status after cut %d:\n%s", i, st)
		}
		if t.Failed() {
			t.Fatalf("cut %d at +%s (%s) left a device that is not factory-fresh; seed %d\n%s", i, at, last, seed, strings.Join(table, "\n"))
		}
	}
	// The cuts must have spread over the reset: were the step delay to stop
	// working, every cut would land before or after a reset of a few ms.
	if want := minResetSteps(cuts); len(landed) < want {
		t.Errorf("the %d cuts landed in %d distinct reset steps, want at least %d (does ovroot.reset_step_delay still slow each step?); seed %d\n%s", cuts, len(landed), want, seed, strings.Join(table, "\n"))
	}
	// After the last reset, a file written survives a power-off and a boot.
	guest(t, vm, "write "+afterResetMarker+" written-after-the-reset")
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)
	vm = boot(t, img)
	expect(t, vm, "GUEST: ready")
	checkMarker(t, vm)
	powerOff(t, vm)
	t.Logf("%s: %d power cuts during factory resets in %d distinct steps, every following boot factory-fresh (seed %d):\n%s", arch, cuts, len(landed), seed, strings.Join(table, "\n"))
}

// minResetSteps is how many distinct reset steps n cuts spread uniformly
// over the reset's ten delayed steps (and the time after them) must hit:
// 10 cuts in fewer than 3 of those 11 spans has odds of about 2 in a
// million (55 pairs of spans, (2/11)^10 each).
func minResetSteps(n int) int {
	if n >= 10 {
		return 3
	}
	return 0
}

// TestFactoryResetFullPartition: a factory reset is what a person tries
// when the data partition is full, so it must work then: a reset requested
// before the partition filled up is performed (not VOLATILE at every boot),
// and ovrootctl can ask for one, and withdraw it, on a full partition.
func TestFactoryResetFullPartition(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			testFactoryResetFullPartition(t, arch)
		})
	}
}

func testFactoryResetFullPartition(t *testing.T, arch layout.Arch) {
	img := buildImage(t, arch, makeSmallRootfs(t, arch), func(im *config.Image) {
		im.DataSize = 64 << 20
		im.Init.Reset.Keep = []string{keptDir}
	})
	resetDone := func(vm *qemu.VM, tag string) {
		t.Helper()
		expect(t, vm, "ovroot: factory reset (trigger=ovrootctl, kept 1 paths) in")
		expect(t, vm, "ovroot: root ready in")
		expect(t, vm, "GUEST: ready")
		if strings.Contains(vm.Console(), "VOLATILE") {
			t.Errorf("a reset on a full partition went volatile:\n%s", vm.Tail(60))
		}
		if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "PERSISTENT") || strings.Contains(st, "PENDING") {
			t.Errorf("status after the reset:\n%s", st)
		}
		if got := guest(t, vm, "exists /var/big.bin"); !strings.Contains(got, "exists=false") {
			t.Errorf("the file that filled the partition survived the reset: %s", got)
		}
		if got := guest(t, vm, "cat "+keptFile); got != "key-"+tag+"\n" {
			t.Errorf("kept %s = %q", keptFile, got)
		}
		// The old upper is deleted in the background; let it finish. Its
		// line may already have passed between the commands above.
		waitConsole(t, vm, "ovroot: removed 2 retired upper and work trees")
	}

	// 1: a reset requested while there was room; then the partition fills
	// up (the boot's reserve still held) before the reboot.
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write "+keptFile+" key-1")
	guest(t, vm, "exec /usr/bin/ovrootctl factory-reset")
	guest(t, vm, "fill-disk /var/big.bin")
	powerOff(t, vm)
	vm = boot(t, img)
	resetDone(vm, "1")
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)

	// 2: the reserve is back; the partition fills up, and ovrootctl asks
	// for a reset, withdraws it and asks again, all on the full partition.
	vm = boot(t, img)
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write "+keptFile+" key-2")
	guest(t, vm, "fill-disk /var/big.bin")
	if out, err := guestErr(vm, "write /var/one-more.txt x"); err == nil {
		t.Fatalf("the partition is not full: a write succeeded: %s", out)
	}
	if out := guest(t, vm, "exec /usr/bin/ovrootctl factory-reset"); !strings.Contains(out, "factory reset scheduled") {
		t.Errorf("factory-reset on a full partition: %s", out)
	}
	if out := guest(t, vm, "exec /usr/bin/ovrootctl factory-reset --cancel"); !strings.Contains(out, "factory reset cancelled") {
		t.Errorf("factory-reset --cancel on a full partition: %s", out)
	}
	if out := guest(t, vm, "exec /usr/bin/ovrootctl factory-reset"); !strings.Contains(out, "factory reset scheduled") {
		t.Errorf("factory-reset again on a full partition: %s", out)
	}
	powerOff(t, vm)
	vm = boot(t, img)
	resetDone(vm, "2")
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)
}

// waitConsole waits until the console shows substr anywhere, also before
// the cursor (a background process may print between two commands).
func waitConsole(t *testing.T, vm *qemu.VM, substr string) {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for !strings.Contains(vm.Console(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("console never showed %q:\n%s", substr, vm.Tail(40))
		}
		time.Sleep(time.Second)
	}
}
