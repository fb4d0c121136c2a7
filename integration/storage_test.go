package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
	"github.com/ovroot/ovroot/verity"
)

// withBlkdebug attaches the image through QEMU's blkdebug driver, which
// fails every read (event read_aio) or write (write_aio) that covers the
// given disk sector with EIO, as failing flash does.
func withBlkdebug(t *testing.T, event string, sector int64) bootOpt {
	t.Helper()
	p := filepath.Join(t.TempDir(), "blkdebug.conf")
	rules := fmt.Sprintf("[inject-error]\nevent = \"%s\"\nerrno = \"5\"\nsector = \"%d\"\nonce = \"off\"\n", event, sector)
	if err := os.WriteFile(p, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	return func(c *qemu.Config) {
		disk := c.Disks[0]
		c.Disks = c.Disks[1:]
		c.Extra = append(c.Extra, "-drive", fmt.Sprintf("if=none,id=blkdebug0,format=raw,file.driver=blkdebug,file.config=%s,file.image.filename=%s", p, disk),
			"-device", "virtio-blk-pci,drive=blkdebug0")
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
