package integration

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

// writePart overwrites bytes of a partition on the host, as a fault would.
func writePart(t *testing.T, img image, label string, off int64, data []byte) {
	t.Helper()
	start, size := partRange(t, img, label)
	if off+int64(len(data)) > size {
		t.Fatalf("write past the end of %s", label)
	}
	writeAt(t, img.path, start+off, data)
}

func readPart(t *testing.T, img image, label string, off, n int64) []byte {
	t.Helper()
	start, _ := partRange(t, img, label)
	return readAt(t, img.path, start+off, n)
}

// writeAt overwrites bytes of the file at path at byte off.
func writeAt(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// readAt reads n bytes of the file at path from byte off.
func readAt(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// expectNoRepair fails when the init ran a repair or a format on the
// data partition of a boot where it must not (why says which).
func expectNoRepair(t *testing.T, vm *qemu.VM, why string) {
	t.Helper()
	for _, c := range []string{"repairing", "formatting", "fsck:"} {
		if strings.Contains(vm.Console(), "ovroot: "+c) {
			t.Errorf("the init tried %q on %s:\n%s", c, why, grepLines(vm.Console(), "ovroot:"))
		}
	}
}

func sumPart(t *testing.T, img image, label string) string {
	t.Helper()
	start, size := partRange(t, img, label)
	f, err := os.Open(img.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, io.NewSectionReader(f, start, size))
	return fmt.Sprintf("%x", h.Sum(nil))
}

// expectVolatile checks a boot that went volatile for reason: the console
// warning, ovrootctl status, a tmpfs at /overlay.
func expectVolatile(t *testing.T, vm *qemu.VM, reason string) {
	t.Helper()
	expect(t, vm, "ovroot: VOLATILE: "+reason)
	expect(t, vm, "changes made on this boot will be LOST at power-off")
	expect(t, vm, "GUEST: ready")
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "VOLATILE: "+reason) {
		t.Errorf("ovrootctl status does not say VOLATILE: %s:\n%s", reason, st)
	}
	mounts := guest(t, vm, "mounts")
	if !strings.Contains(mounts, "tmpfs /overlay tmpfs") {
		t.Errorf("/overlay is not a tmpfs in volatile mode:\n%s", mounts)
	}
	if !strings.Contains(mounts, "overlay / overlay") {
		t.Errorf("no overlay root in volatile mode:\n%s", mounts)
	}
}

// TestNeverBricked builds broken disks on purpose and checks the device
// still boots, in the best state it can, and says which.
func TestNeverBricked(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			// Each case builds its own image of the one rootfs (read
			// only), so they run in parallel with everything else.
			rootfs := makeSmallRootfs(t, arch)
			for _, c := range []struct {
				name string
				test func(*testing.T, layout.Arch, string)
			}{
				{"repair", testRepair},
				{"missing-data-partition", testMissingData},
				{"bad-config", testBadConfig},
				{"missing-root", testMissingRoot},
				{"on-corrupt-format", testOnCorruptFormat},
				{"failsafe", testFailsafe},
				{"emergency-shell", testEmergencyShell},
				{"data-full", testDataFull},
				{"read-only-data", testReadOnlyData},
			} {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.test(t, arch, rootfs)
				})
			}
		})
	}
}

// testRepair: a data partition whose superblock was destroyed is repaired
// from its backup and keeps its files; one holding another filesystem is
// left untouched and the boot is volatile.
func testRepair(t *testing.T, arch layout.Arch, rootfs string) {
	img := buildImage(t, arch, rootfs, func(im *config.Image) {
		im.DataSize = 256 << 20 // room for a backup superblock (group 1, at 128 MiB)
	})
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write /etc/precious.txt written-before-the-damage")
	powerOff(t, vm)

	// Destroy the primary superblock (bytes 1024..2047 of the partition).
	writePart(t, img, layout.DataLabel, 1024, make([]byte, 1024))
	vm = boot(t, img)
	expect(t, vm, "primary superblock damaged")
	expect(t, vm, "ovroot: repairing")
	expect(t, vm, "ovroot: repaired")
	expect(t, vm, "GUEST: ready")
	if strings.Contains(vm.Console(), "formatting") || strings.Contains(vm.Console(), "VOLATILE") {
		t.Errorf("a repairable partition was formatted or given up on:\n%s", vm.Tail(60))
	}
	if got := guest(t, vm, "cat /etc/precious.txt"); got != "written-before-the-damage\n" {
		t.Errorf("after the repair /etc/precious.txt = %q", got)
	}
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "PERSISTENT") || !strings.Contains(st, "repaired at boot") {
		t.Errorf("status after a repair:\n%s", st)
	}
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)

	// The first 4 MiB overwritten with random bytes (the backup
	// superblocks further in intact): e2fsck from a backup gives up, and
	// on_corrupt = keep means the partition as it was, byte for byte, for
	// whoever recovers it by hand: the repair's writes are rolled back.
	garbage := make([]byte, 4<<20)
	rand.New(rand.NewSource(24)).Read(garbage)
	writePart(t, img, layout.DataLabel, 0, garbage)
	damaged := sumPart(t, img, layout.DataLabel)
	vm = boot(t, img)
	expect(t, vm, "ovroot: repairing")
	expect(t, vm, "rolled back: wrote back the")
	expectVolatile(t, vm, "data partition /dev/vda3 (PARTLABEL=rootfs_data): ext4 (primary superblock damaged); repair failed: e2fsck")
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "leaving it untouched (on_corrupt = keep)") {
		t.Errorf("status after a rolled-back repair:\n%s", st)
	}
	powerOff(t, vm)
	if got := sumPart(t, img, layout.DataLabel); got != damaged {
		t.Errorf("a repair that gave up changed the data partition (sha256 %s, was %s)", got, damaged)
	}

	// Another filesystem where the data should be: never formatted over.
	rom := readPart(t, img, layout.RootLabel, 0, 4<<20)
	writePart(t, img, layout.DataLabel, 0, rom)
	before := sumPart(t, img, layout.DataLabel)
	vm = boot(t, img)
	expectVolatile(t, vm, "data partition /dev/vda3 (PARTLABEL=rootfs_data) holds squashfs content, not ext4")
	guest(t, vm, "write /etc/lost-at-power-off.txt x")
	powerOff(t, vm)
	if sumPart(t, img, layout.DataLabel) != before {
		t.Error("the init changed a data partition it could not use")
	}
}

// testMissingData: no partition with the data label (and rootdelay=).
func testMissingData(t *testing.T, arch layout.Arch, rootfs string) {
	img := buildImage(t, arch, rootfs, func(im *config.Image) {
		im.Init.DataLabel = "userdata"
		im.Init.DeviceTimeout = config.Duration(2 * time.Second)
	})
	vm := boot(t, img, withCmdline("rootdelay=1"))
	expect(t, vm, "ovroot: rootdelay: waiting 1s")
	expect(t, vm, "ovroot: no partition labelled userdata after 2s; block devices: /dev/vda, /dev/vda1 (PARTLABEL=boot), /dev/vda2 (PARTLABEL=rootfs), /dev/vda3 (PARTLABEL=rootfs_data)")
	expectVolatile(t, vm, "no partition labelled userdata")
	guest(t, vm, "write /etc/volatile.txt gone-after-power-off")
	powerOff(t, vm)
	vm = boot(t, img)
	expect(t, vm, "GUEST: ready")
	if got := guest(t, vm, "exists /etc/volatile.txt"); !strings.Contains(got, "exists=false") {
		t.Errorf("a file written in volatile mode survived: %s", got)
	}
	powerOff(t, vm)
}

// testReadOnlyData: a write-protected disk (QEMU readonly=on, as a
// write-protected SD card) boots volatile, saying so, without touching the
// data partition; a factory reset asked for on the kernel command line
// and by ovrootctl is reported as impossible; with the write protection
// gone the device boots persistent with its files.
func testReadOnlyData(t *testing.T, arch layout.Arch, rootfs string) {
	img := buildImage(t, arch, rootfs, nil)
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write /etc/kept.txt written-before-the-write-protect")
	powerOff(t, vm)
	before := sumPart(t, img, layout.DataLabel)

	vm = boot(t, img, withCmdline("ovroot.reset"), func(c *qemu.Config) {
		c.ReadOnlyDisks = append(c.Disks, c.ReadOnlyDisks...)
		c.Disks = nil
	})
	expectVolatile(t, vm, "data partition /dev/vda3 (PARTLABEL=rootfs_data) is read-only (write-protected: /sys/class/block/vda3/ro is 1)")
	if w := "ovroot: factory reset (trigger=cmdline) not stored: the data partition is not in use"; !strings.Contains(vm.Console(), w) {
		t.Errorf("the console lacks %q", w)
	}
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "a factory reset was asked for (cmdline) but could not be done or stored") {
		t.Errorf("status does not report the reset that could not be done:\n%s", st)
	}
	if out, err := guestErr(vm, "exec /usr/bin/ovrootctl factory-reset"); err == nil || !strings.Contains(out, "is read-only (write-protected") || !strings.Contains(out, "a request could not be stored") {
		t.Errorf("ovrootctl factory-reset on a write-protected disk: %v\n%s", err, out)
	}
	expectNoRepair(t, vm, "a write-protected disk")
	vm.Kill()
	if after := sumPart(t, img, layout.DataLabel); after != before {
		t.Errorf("the data partition changed during the write-protected boot")
	}

	vm = boot(t, img)
	expect(t, vm, "GUEST: ready")
	if got := strings.TrimSpace(guest(t, vm, "cat /etc/kept.txt")); got != "written-before-the-write-protect" {
		t.Errorf("after the write protection: /etc/kept.txt = %q", got)
	}
	powerOff(t, vm)
}

// testBadConfig: an init config that does not parse boots with the
// defaults and names the line.
func testBadConfig(t *testing.T, arch layout.Arch, rootfs string) {
	im := config.DefaultImage(arch)
	k := filepath.Join(kernelCache(), arch.DebianArch())
	im.Kernel, im.ModulesDir, im.Rootfs = filepath.Join(k, "vmlinuz"), filepath.Join(k, "modules"), rootfs
	out := filepath.Join(t.TempDir(), "disk.img")
	bad := []byte("root_label = \"rootfs\"\ndevice_timeout = \"soon\"\n")
	if _, err := imagebuild.BuildImage(context.Background(), im, out, imagebuild.Options{InitConfig: bad, Log: t.Logf}); err != nil {
		t.Fatal(err)
	}
	vm := boot(t, image{arch: arch, path: out})
	expect(t, vm, `ovroot: config: /etc/ovroot/init.toml:2: device_timeout: invalid duration "soon"`)
	expect(t, vm, "booting with defaults")
	expect(t, vm, "ovroot: root ready in")
	expect(t, vm, "GUEST: ready")
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "PERSISTENT") {
		t.Errorf("status with a bad config:\n%s", st)
	}
	powerOff(t, vm)
}

// testMissingRoot: no root partition is an error that names the label and
// the devices, and the init tries again instead of panicking the kernel.
func testMissingRoot(t *testing.T, arch layout.Arch, rootfs string) {
	img := buildImage(t, arch, rootfs, func(im *config.Image) {
		im.Init.RootLabel = "sysroot"
		im.Init.DeviceTimeout = config.Duration(2 * time.Second)
	})
	vm := boot(t, img)
	expect(t, vm, "ovroot: cannot build a root (attempt 1): no partition labelled sysroot after 2s; block devices: /dev/vda, /dev/vda1 (PARTLABEL=boot), /dev/vda2 (PARTLABEL=rootfs), /dev/vda3 (PARTLABEL=rootfs_data)")
	expect(t, vm, "ovroot: cannot build a root (attempt 2)")
	if strings.Contains(vm.Console(), "Kernel panic") {
		t.Errorf("kernel panic:\n%s", vm.Tail(40))
	}
	vm.Kill()
}

// testOnCorruptFormat: with on_corrupt = "format", garbage is formatted.
func testOnCorruptFormat(t *testing.T, arch layout.Arch, rootfs string) {
	img := buildImage(t, arch, rootfs, func(im *config.Image) { im.Init.OnCorrupt = "format" })
	garbage := make([]byte, 2<<20)
	rand.New(rand.NewSource(1)).Read(garbage)
	writePart(t, img, layout.DataLabel, 0, garbage)
	vm := boot(t, img)
	expect(t, vm, "holds unknown content, not ext4: formatting it ext4 because on_corrupt = format")
	expect(t, vm, "ovroot: root ready in")
	expect(t, vm, "GUEST: ready")
	checkMounts(t, guest(t, vm, "mounts"))
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)
}

// testFailsafe: f + Enter on the console, or ovroot.failsafe=1, boots the
// factory root with a RAM upper and the data partition read-only at
// /overlay; the next normal boot finds the data as it was.
func testFailsafe(t *testing.T, arch layout.Arch, rootfs string) {
	img := buildImage(t, arch, rootfs, func(im *config.Image) {
		im.Init.FailsafeWindow = config.Duration(4 * time.Second)
	})
	vm := boot(t, img)
	expect(t, vm, "ovroot: press f and Enter within 4s for failsafe mode")
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write /etc/persist.txt kept-data")
	powerOff(t, vm)

	for _, c := range []struct {
		why  string
		opts []bootOpt
	}{
		{"f pressed on the console", nil},
		{"ovroot.failsafe on the kernel command line", []bootOpt{withCmdline("ovroot.failsafe=1")}},
	} {
		vm = boot(t, img, c.opts...)
		if c.opts == nil {
			expect(t, vm, "ovroot: press f and Enter")
			if err := vm.Send("f"); err != nil {
				t.Fatal(err)
			}
		}
		expect(t, vm, "ovroot: FAILSAFE: "+c.why)
		expect(t, vm, "GUEST: ready")
		mounts := guest(t, vm, "mounts")
		if !regexp.MustCompile(`(?m)^/dev/vda3 /overlay ext4 ro[,\s]`).MatchString(mounts) ||
			!strings.Contains(mounts, "upperdir=/run/ovroot/failsafe/upper") {
			t.Errorf("failsafe mounts:\n%s", mounts)
		}
		if got := guest(t, vm, "exists /etc/persist.txt"); !strings.Contains(got, "exists=false") {
			t.Errorf("failsafe root shows the data partition's changes: %s", got)
		}
		if got := guest(t, vm, "cat /overlay/upper/etc/persist.txt"); got != "kept-data\n" {
			t.Errorf("data partition not readable for rescue at /overlay: %q", got)
		}
		if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "FAILSAFE: "+c.why) {
			t.Errorf("status in failsafe:\n%s", st)
		}
		guest(t, vm, "write /etc/failsafe-only.txt x")
		powerOff(t, vm)
	}

	vm = boot(t, img)
	expect(t, vm, "GUEST: ready")
	if got := guest(t, vm, "cat /etc/persist.txt"); got != "kept-data\n" {
		t.Errorf("after failsafe boots, /etc/persist.txt = %q", got)
	}
	if got := guest(t, vm, "exists /etc/failsafe-only.txt"); !strings.Contains(got, "exists=false") {
		t.Errorf("a file written in failsafe mode persisted: %s", got)
	}
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)
}

// testEmergencyShell: a factory root that cannot be read leaves no root to
// boot; the init says why, lists the block devices, and starts a shell on
// the console; exiting it tries again.
func testEmergencyShell(t *testing.T, arch layout.Arch, rootfs string) {
	img := buildImage(t, arch, rootfs, func(im *config.Image) { im.EmergencyShell = true })
	writePart(t, img, layout.RootLabel, 0, make([]byte, 64<<10)) // the squashfs superblock and more
	vm := boot(t, img)
	expect(t, vm, "ovroot: cannot build a root (attempt 1): root partition /dev/vda2 (PARTLABEL=rootfs) holds unknown content, not squashfs: not mounted")
	expect(t, vm, "ovroot: block devices: /dev/vda, /dev/vda1 (PARTLABEL=boot), /dev/vda2 (PARTLABEL=rootfs), /dev/vda3 (PARTLABEL=rootfs_data)")
	expect(t, vm, "ovroot: starting an emergency shell on the console")
	time.Sleep(time.Second) // the shell starts
	// Output the typed line does not contain, so the tty's echo cannot pass.
	if err := vm.Send("ls /lib/modules"); err != nil {
		t.Fatal(err)
	}
	expect(t, vm, "ovroot.load")
	vm.Send("cat /proc/cmdline")
	expect(t, vm, "panic=-1")
	vm.SendRaw("\x04") // Ctrl-D: end of input leaves the shell
	expect(t, vm, "ovroot: emergency shell exited: trying to boot again")
	expect(t, vm, "ovroot: cannot build a root (attempt 2)")
	if strings.Contains(vm.Console(), "Kernel panic") {
		t.Errorf("kernel panic:\n%s", vm.Tail(40))
	}
	vm.Kill()
}

// testDataFull: a data partition filled to the last block still gives a
// writable overlay root on the next boot.
func testDataFull(t *testing.T, arch layout.Arch, rootfs string) {
	img := buildImage(t, arch, rootfs, func(im *config.Image) { im.DataSize = 64 << 20 })
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write /etc/before-full.txt durable")
	guest(t, vm, "fill-disk /var/big.bin")
	powerOff(t, vm)

	vm = boot(t, img)
	expect(t, vm, "ovroot: data partition full")
	expect(t, vm, "released the 1024 KiB reserve")
	expect(t, vm, "GUEST: ready")
	mounts := guest(t, vm, "mounts")
	if !regexp.MustCompile(`(?m)^overlay / overlay rw,`).MatchString(mounts) {
		t.Errorf("root not a read-write overlay on a full data partition:\n%s", mounts)
	}
	guest(t, vm, "write /etc/after-full.txt room-again")
	if got := guest(t, vm, "cat /etc/before-full.txt"); got != "durable\n" {
		t.Errorf("/etc/before-full.txt = %q", got)
	}
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "data partition full") ||
		!strings.Contains(st, "PERSISTENT, data partition FULL") || !strings.Contains(st, "1024 KiB reserve was used up") {
		t.Errorf("status does not warn of the full partition:\n%s", st)
	}
	guest(t, vm, "rm /var/big.bin")
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)

	vm = boot(t, img)
	expect(t, vm, "GUEST: ready")
	if strings.Contains(vm.Console(), "data partition full") {
		t.Errorf("still full after the big file was deleted:\n%s", vm.Tail(40))
	}
	if got := guest(t, vm, "cat /etc/after-full.txt"); got != "room-again\n" {
		t.Errorf("/etc/after-full.txt = %q", got)
	}
	powerOff(t, vm)
}
