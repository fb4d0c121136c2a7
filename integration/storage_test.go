package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
	"github.com/ovroot/ovroot/verity"
)

// withBlkdebug attaches the image through QEMU's blkdebug driver, which
// fails every read (event read_aio) or write (write_aio) that covers the
// given disk sector with EIO, as failing flash does.
func withBlkdebug(t *testing.T, event string, sector int64) bootOpt {
	t.Helper()
	return withBlkdebugRules(t, fmt.Sprintf("[inject-error]\nevent = \"%s\"\nerrno = \"5\"\nsector = \"%d\"\nonce = \"off\"\n", event, sector))
}

// withBlkdebugRules attaches the image through blkdebug with the rules of
// a blkdebug config file.
func withBlkdebugRules(t *testing.T, rules string) bootOpt {
	t.Helper()
	p := blkdebugConfig(t, rules)
	return func(c *qemu.Config) {
		disk := c.Disks[0]
		c.Disks = c.Disks[1:]
		c.Extra = append(c.Extra, "-drive", fmt.Sprintf("if=none,id=blkdebug0,format=raw,file.driver=blkdebug,file.config=%s,file.image.filename=%s", p, disk),
			"-device", "virtio-blk-pci,drive=blkdebug0")
	}
}

// blkdebugConfig writes rules to a blkdebug config file and returns its path.
func blkdebugConfig(t *testing.T, rules string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "blkdebug.conf")
	if err := os.WriteFile(p, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// everyWriteFails are blkdebug rules under which every write to the disk
// fails with EIO (reads still work): flash worn to the point where it
// still reads. The rule comes alive at the first write (its event) and
// then fails that write and every later one.
const everyWriteFails = "[inject-error]\nevent = \"write_aio\"\niotype = \"write\"\nerrno = \"5\"\nonce = \"off\"\n"

// withSwitchableDisk attaches the image as a file node under a raw node,
// with QMP on sock, so failWritesNow can put blkdebug between the two
// while the guest runs: the storage dies at a moment the test chooses.
func withSwitchableDisk(sock string) bootOpt {
	return func(c *qemu.Config) {
		disk := c.Disks[0]
		c.Disks = c.Disks[1:]
		c.QMP = sock
		c.Extra = append(c.Extra,
			"-blockdev", "driver=file,node-name=file0,filename="+disk,
			"-blockdev", "driver=raw,node-name=disk0,file=file0",
			"-device", "virtio-blk-pci,drive=disk0")
	}
}

// failWritesNow makes every write of the guest's disk fail from now on
// (a disk attached withSwitchableDisk): QMP blockdev-add of a blkdebug
// node over the image file, then blockdev-reopen of the raw node onto it.
func failWritesNow(t *testing.T, sock string) {
	t.Helper()
	rules := blkdebugConfig(t, everyWriteFails)
	q, err := qemu.DialQMP(sock, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Execute("blockdev-add", map[string]any{"driver": "blkdebug", "node-name": "dbg0", "config": rules, "image": "file0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Execute("blockdev-reopen", map[string]any{"options": []any{map[string]any{"driver": "raw", "node-name": "disk0", "file": "dbg0"}}}); err != nil {
		t.Fatal(err)
	}
}

// TestFailingStorage injects I/O errors with QEMU's blkdebug and checks
// each ends where it must: read errors on the data partition's superblock
// and write errors during the first-boot format each give a loud volatile
// boot (nothing formatted over a partition that cannot be read), and the
// device is persistent again, with its files, once the errors stop; read
// errors in a verity root are found before anything is mounted from it,
// named as the storage failing (not as tampering), and the root is never
// mounted. Each faulty boot is a single boot: no hang, no panic loop.
func TestFailingStorage(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			rootfs := makeSmallRootfs(t, arch)
			t.Run("data-superblock-read", func(t *testing.T) {
				t.Parallel()
				img := buildImage(t, arch, rootfs, nil)
				vm := boot(t, img)
				expect(t, vm, "GUEST: ready")
				guest(t, vm, "write /etc/kept.txt written-before-the-errors")
				powerOff(t, vm)
				start, _ := partRange(t, img, layout.DataLabel)
				before := sumPart(t, img, layout.DataLabel)
				vm = boot(t, img, withBlkdebug(t, "read_aio", start/512+2)) // the ext4 superblock: byte 1024
				expectVolatile(t, vm, "probe data partition /dev/vda3 (PARTLABEL=rootfs_data): read first 1048576 bytes: read /dev/vda3: input/output error")
				powerOff(t, vm)
				if sumPart(t, img, layout.DataLabel) != before {
					t.Errorf("the data partition changed during the boot with read errors")
				}
				vm = boot(t, img)
				expect(t, vm, "ovroot: mounted /dev/vda3 (ext4, rw) on /overlay")
				expect(t, vm, "GUEST: ready")
				if got := strings.TrimSpace(guest(t, vm, "cat /etc/kept.txt")); got != "written-before-the-errors" {
					t.Errorf("after the read errors: /etc/kept.txt = %q", got)
				}
				powerOff(t, vm)
			})
			t.Run("format-write", func(t *testing.T) {
				t.Parallel()
				img := buildImage(t, arch, rootfs, nil)
				start, _ := partRange(t, img, layout.DataLabel)
				vm := boot(t, img, withBlkdebug(t, "write_aio", start/512+2))
				expect(t, vm, "ovroot: data partition /dev/vda3 (PARTLABEL=rootfs_data) is blank: formatting it")
				expectVolatile(t, vm, "format /dev/vda3 (PARTLABEL=rootfs_data) as ext4: ")
				if !strings.Contains(vm.Console(), "input/output error") {
					t.Errorf("the volatile reason does not name the I/O error:\n%s", grepLines(vm.Console(), "ovroot:"))
				}
				powerOff(t, vm)
				vm = boot(t, img)
				expect(t, vm, "ovroot: mounted /dev/vda3 (ext4, rw) on /overlay")
				expect(t, vm, "GUEST: ready")
				guest(t, vm, "write /etc/kept.txt written-after-the-errors")
				powerOff(t, vm)
				fsck(t, img, layout.DataLabel)
			})
			t.Run("data-write", func(t *testing.T) {
				t.Parallel()
				testDataWriteErrors(t, buildImage(t, arch, rootfs, nil))
			})
			t.Run("verity-root-read", func(t *testing.T) {
				t.Parallel()
				img := buildImage(t, arch, rootfs, withVerity)
				start, _ := partRange(t, img, layout.RootLabel)
				const block = 75
				vm := boot(t, img, withBlkdebug(t, "read_aio", start/512+block*verity.BlockSize/512+1))
				expect(t, vm, fmt.Sprintf("ovroot: root integrity failure on %s: cannot read data block %d from /dev/vda2: read /dev/vda2: input/output error (the storage is failing)", layout.RootLabel, block))
				expect(t, vm, "cannot build a root (attempt 2): root integrity failure")
				if strings.Contains(vm.Console(), " on /rom") {
					t.Errorf("a root that could not be read whole was mounted:\n%s", grepLines(vm.Console(), "ovroot:"))
				}
				vm.Kill()
			})
		})
	}
}

// testDataWriteErrors: storage that reads but fails every write from the
// start of a boot gives a loud volatile boot that changes nothing (the
// data filesystem's mount fails with EIO; no repair is tried); writes that start failing in the
// middle of a persistent boot fail loudly in the running system, which
// ovrootctl status reports; the next boot on working storage is persistent
// with every file synced before the failure, and the filesystem is clean.
func testDataWriteErrors(t *testing.T, img image) {
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write /etc/kept.txt written-before-the-errors")
	powerOff(t, vm)
	before := sumPart(t, img, layout.DataLabel)

	// ext4 writes its superblock when it mounts read-write: the mount
	// fails with EIO, and e2fsck is not let loose on failing storage.
	vm = boot(t, img, withBlkdebugRules(t, everyWriteFails))
	expectVolatile(t, vm, "mount data /dev/vda3 (PARTLABEL=rootfs_data) on /overlay: mount /dev/vda3 (ext4, noatime) on /overlay: input/output error (the storage is failing): not repaired or formatted, left as it is")
	expectNoRepair(t, vm, "storage that fails writes")
	powerOff(t, vm)
	if sumPart(t, img, layout.DataLabel) != before {
		t.Errorf("the data partition changed during a boot on which every write failed")
	}

	sock := filepath.Join(t.TempDir(), "qmp.sock")
	vm = boot(t, img, withSwitchableDisk(sock))
	expect(t, vm, "ovroot: mounted /dev/vda3 (ext4, rw) on /overlay")
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write /etc/synced.txt written-while-the-storage-worked")
	failWritesNow(t, sock)
	// A data write that fails does not stop ext4 (the fsync says EIO);
	// the next journal commit (every 5 s) fails too, ext4 aborts the
	// journal and, at the next write, turns read-only: what status says.
	var st string
	for deadline := time.Now().Add(60 * time.Second); ; {
		if out, err := guestErr(vm, "write /etc/lost.txt written-after-the-storage-failed"); err == nil {
			t.Fatalf("a synced write on storage that fails every write succeeded: %s", out)
		}
		st = guest(t, vm, "exec /usr/bin/ovrootctl status")
		if strings.Contains(st, "FAILING") || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if !strings.Contains(st, "PERSISTENT at boot, data partition FAILING since: the kernel's ext4 on /dev/vda3 reported") {
		t.Errorf("ovrootctl status after the writes failed does not say so:\n%s", st)
	}
	t.Logf("ovrootctl status once the writes failed:\n%s", st)
	vm.Kill()

	vm = boot(t, img)
	expect(t, vm, "ovroot: mounted /dev/vda3 (ext4, rw) on /overlay")
	expect(t, vm, "GUEST: ready")
	for f, want := range map[string]string{"/etc/kept.txt": "written-before-the-errors", "/etc/synced.txt": "written-while-the-storage-worked"} {
		if got := strings.TrimSpace(guest(t, vm, "cat "+f)); got != want {
			t.Errorf("after the write errors: %s = %q, want %q", f, got, want)
		}
	}
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.HasPrefix(st, "PERSISTENT\n") {
		t.Errorf("ovrootctl status once the storage works again:\n%s", st)
	}
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)
}
