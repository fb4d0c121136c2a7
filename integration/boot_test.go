package integration

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/internal/manifest"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

// TestBoot is the walking skeleton, on each arch: first boot formats the
// blank data partition and stacks the overlay; /rom holds every entry of the
// rootfs byte for byte; a write survives a power-off; a deleted factory file
// is a whiteout in the upper; the second boot does not format again; the
// data filesystem passes the host's e2fsck after each power-off. The root is a
// verity root: /rom comes through dm-verity, whose tree Debian's veritysetup
// verifies on the host.
func TestBoot(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range allArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			testBoot(t, arch)
		})
	}
}

func testBoot(t *testing.T, arch layout.Arch) {
	rootfs := makeRootfs(t, arch)
	want, err := manifest.Walk(rootfs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 5000 {
		t.Fatalf("test rootfs has %d entries, want >= 5000", len(want))
	}
	// A verity root: the walking skeleton boots through dm-verity on
	// every arch, and the manifest of /rom below is read through it.
	img := buildImage(t, arch, rootfs, withVerity)
	v := imageVerity(t, img)
	checkVerityOnHost(t, img, layout.RootLabel, v)

	// First boot.
	vm := boot(t, img)
	expect(t, vm, "is blank: formatting it ext4")
	ready := expect(t, vm, "ovroot: root ready in")
	if !regexp.MustCompile(`root ready in \d+ ms \(modules \d+ ms, devices \d+ ms, mounts \d+ ms\)`).MatchString(ready) {
		t.Errorf("boot report line = %q, want the documented format", ready)
	}
	expect(t, vm, "GUEST: ready")

	checkMounts(t, guest(t, vm, "mounts"))
	checkVerityInGuest(t, vm, v)
	checkRom(t, vm, want)

	guest(t, vm, "write /etc/persist.txt written-on-first-boot")
	guest(t, vm, "rm "+factoryConf)
	guest(t, vm, "setxattr /etc/hostname user.persist set-on-first-boot")
	checkWhiteout(t, vm)
	status := guest(t, vm, "exec /usr/bin/ovrootctl status")
	for _, w := range []string{"PERSISTENT", "first boot: the data partition was blank"} {
		if !strings.Contains(status, w) {
			t.Errorf("ovrootctl status on first boot lacks %q:\n%s", w, status)
		}
	}
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)
	checkUpperOnHost(t, img)

	// Second boot of the same disk.
	vm = boot(t, img)
	expect(t, vm, "ovroot: root ready in")
	expect(t, vm, "GUEST: ready")
	if strings.Contains(vm.Console(), "formatting") {
		t.Errorf("second boot formatted the data partition again:\n%s", vm.Tail(60))
	}
	checkMounts(t, guest(t, vm, "mounts"))
	if got := guest(t, vm, "cat /etc/persist.txt"); got != "written-on-first-boot\n" {
		t.Errorf("after a power-off, /etc/persist.txt = %q, want %q", got, "written-on-first-boot\n")
	}
	checkWhiteout(t, vm)
	status = guest(t, vm, "exec /usr/bin/ovrootctl status")
	if !strings.Contains(status, "PERSISTENT") || strings.Contains(status, "first boot") {
		t.Errorf("ovrootctl status on second boot:\n%s\nwant PERSISTENT and no first-boot line", status)
	}
	changes := guest(t, vm, "exec /usr/bin/ovrootctl changes")
	for _, w := range []string{"A /etc/persist.txt", "D " + factoryConf} {
		if !strings.Contains(changes, w) {
			t.Errorf("ovrootctl changes lacks %q:\n%s", w, changes)
		}
	}
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)
}

// checkMounts asserts the guest's /proc/mounts: / an overlay of /rom with
// its upper on /overlay, /rom squashfs read-only, /overlay ext4 read-write.
func checkMounts(t *testing.T, mounts string) {
	t.Helper()
	type mnt struct{ dev, fstype, opts string }
	got := map[string]mnt{}
	for _, line := range strings.Split(mounts, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 {
			got[f[1]] = mnt{f[0], f[2], "," + f[3] + ","}
		}
	}
	root, rom, ovl := got["/"], got["/rom"], got["/overlay"]
	if root.fstype != "overlay" || !strings.Contains(root.opts, ",lowerdir=/rom,") ||
		!strings.Contains(root.opts, ",upperdir=/overlay/upper,") || !strings.Contains(root.opts, ",workdir=/overlay/work,") {
		t.Errorf("/ is %+v, want overlay lowerdir=/rom upperdir=/overlay/upper workdir=/overlay/work\n%s", root, mounts)
	}
	if rom.fstype != "squashfs" || !strings.Contains(rom.opts, ",ro,") {
		t.Errorf("/rom is %+v, want squashfs ro\n%s", rom, mounts)
	}
	if ovl.fstype != "ext4" || !strings.Contains(ovl.opts, ",rw,") {
		t.Errorf("/overlay is %+v, want ext4 rw\n%s", ovl, mounts)
	}
}

// checkRom compares the guest's manifest of /rom with the rootfs the image
// was built from; on a mismatch it fetches the full listing and shows the
// difference.
func checkRom(t *testing.T, vm *qemu.VM, want []manifest.Entry) {
	t.Helper()
	// Kernel messages may be mixed into the console output: only the
	// manifest line counts.
	out := guest(t, vm, "manifest /rom")
	got := regexp.MustCompile(`manifest entries=\d+ digest=[0-9a-f]+`).FindString(out)
	if got == "" {
		got = out
	}
	wantLine := "manifest entries=" + strconv.Itoa(len(want)) + " digest=" + manifest.Digest(want)
	if got == wantLine {
		return
	}
	full := guest(t, vm, "manifest-full /rom")
	wantText := manifest.Text(want)
	var diff []string
	gotLines := map[string]bool{}
	for _, l := range strings.Split(full, "\n") {
		gotLines[l] = true
	}
	for _, l := range strings.Split(strings.TrimSuffix(wantText, "\n"), "\n") {
		if !gotLines[l] {
			diff = append(diff, "missing or different in /rom: "+l)
		}
		if len(diff) > 30 {
			break
		}
	}
	t.Errorf("/rom does not match the rootfs: guest %q, want %q\n%s", got, wantLine, strings.Join(diff, "\n"))
}

// checkWhiteout: the deleted factory file is gone from /, intact in /rom,
// and a whiteout (character device 0/0) in the upper.
func checkWhiteout(t *testing.T, vm *qemu.VM) {
	t.Helper()
	if got := guest(t, vm, "exists "+factoryConf); !strings.Contains(got, "exists=false") {
		t.Errorf("deleted %s still visible: %q", factoryConf, got)
	}
	if got := guest(t, vm, "cat /rom"+factoryConf); got != factoryContent {
		t.Errorf("/rom%s = %q, want the factory content %q", factoryConf, got, factoryContent)
	}
	st := guest(t, vm, "stat /overlay/upper"+factoryConf)
	if !strings.Contains(st, "type=char") || !strings.Contains(st, "rdev=0:0") {
		t.Errorf("upper entry for deleted %s = %q, want a whiteout (char device 0:0)", factoryConf, st)
	}
}

// checkUpperOnHost reads the upper of the powered-off disk on the host
// with debugfs, not through the guest: the deleted factory file is a
// whiteout (character device 0:0), the written file holds what was
// written, and the xattr set on a copied-up file is stored with it.
func checkUpperOnHost(t *testing.T, img image) {
	t.Helper()
	part := partition(t, img, layout.DataLabel)
	debugfs := func(cmd string) string {
		out, err := exec.Command("debugfs", "-R", cmd, part).Output()
		if err != nil {
			t.Fatalf("debugfs -R %q %s: %v", cmd, part, err)
		}
		return string(out)
	}
	upper := "/" + layout.UpperName
	if st := debugfs("stat " + upper + factoryConf); !strings.Contains(st, "Type: character special") ||
		!strings.Contains(st, "Device major/minor number: 00:00") {
		t.Errorf("on the host, %s%s is not a whiteout (char 0:0):\n%s", upper, factoryConf, st)
	}
	if got := debugfs("cat " + upper + "/etc/persist.txt"); got != "written-on-first-boot\n" {
		t.Errorf("on the host, %s/etc/persist.txt = %q, want %q", upper, got, "written-on-first-boot\n")
	}
	if got := debugfs("ea_get -V " + upper + "/etc/hostname user.persist"); got != "set-on-first-boot\n" {
		t.Errorf("on the host, xattr user.persist of %s/etc/hostname = %q, want %q", upper, got, "set-on-first-boot\n")
	}
}
