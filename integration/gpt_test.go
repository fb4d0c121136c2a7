package integration

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/rand"
	"os"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

// gptCopy is one copy of an image's GPT as bytes: its header sector and
// its partition entry array, and where each lies in the file.
type gptCopy struct {
	header, entries       []byte
	headerOff, entriesOff int64
}

// readGPTCopy reads the primary (LBA 1) or the backup (last LBA) GPT of
// the disk image at path.
func readGPTCopy(t *testing.T, path string, primary bool) gptCopy {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var c gptCopy
	c.headerOff = 512
	if !primary {
		c.headerOff = fi.Size() - 512
	}
	c.header = readAt(t, path, c.headerOff, 512)
	if !bytes.HasPrefix(c.header, []byte("EFI PART")) {
		t.Fatalf("no GPT header at byte %d of %s", c.headerOff, path)
	}
	c.entriesOff = int64(binary.LittleEndian.Uint64(c.header[72:])) * 512
	n := int64(binary.LittleEndian.Uint32(c.header[80:])) * int64(binary.LittleEndian.Uint32(c.header[84:]))
	c.entries = readAt(t, path, c.entriesOff, n)
	return c
}

// write puts the copy back with both CRCs computed (a table that is valid
// to the kernel, whatever it says).
func (c gptCopy) write(t *testing.T, path string) {
	t.Helper()
	binary.LittleEndian.PutUint32(c.header[88:], crc32.ChecksumIEEE(c.entries))
	size := binary.LittleEndian.Uint32(c.header[12:])
	binary.LittleEndian.PutUint32(c.header[16:], 0)
	binary.LittleEndian.PutUint32(c.header[16:], crc32.ChecksumIEEE(c.header[:size]))
	writeAt(t, path, c.entriesOff, c.entries)
	writeAt(t, path, c.headerOff, c.header)
}

// setName renames partition entry i (0-based).
func (c gptCopy) setName(i int, name string) {
	size := int(binary.LittleEndian.Uint32(c.header[84:]))
	field := c.entries[i*size+56 : i*size+128]
	clear(field)
	for j, u := range utf16.Encode([]rune(name)) {
		binary.LittleEndian.PutUint16(field[2*j:], u)
	}
}

// TestBadPartitionTable boots disks whose partition table or root
// partition is wrong in the ways the field makes them: the init names the
// problem and never mounts the wrong thing; a table the kernel can still
// read from its other copy is repaired and the device boots as usual.
// x86_64 only: the GPT is read by the same kernel and Go code on every
// arch, and TestBoot covers the others.
func TestBadPartitionTable(t *testing.T) {
	requireTools(t)
	t.Parallel()
	arch := layout.X86_64
	rootfs := makeSmallRootfs(t, arch)
	// Each case gets its own image of the one rootfs.
	for _, c := range []struct {
		name string
		test func(*testing.T, image)
	}{
		{"same-label-twice", testSameLabelTwice},
		{"garbage-primary-entries", testGarbagePrimaryEntries},
		{"stale-backup", testStaleBackup},
		{"root-not-squashfs", testRootNotSquashfs},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.test(t, buildImage(t, arch, rootfs, nil))
		})
	}
}

// testSameLabelTwice: the data partition also labelled rootfs (in both
// copies of the table) cannot be told from the root: an error naming
// both, nothing mounted from either.
func testSameLabelTwice(t *testing.T, img image) {
	for _, primary := range []bool{true, false} {
		c := readGPTCopy(t, img.path, primary)
		c.setName(2, layout.RootLabel)
		c.write(t, img.path)
	}
	expectNoRoot(t, boot(t, img), "find partitions: PARTLABEL rootfs is on both /dev/vda2 and /dev/vda3 of the same disk: cannot tell which to use",
		"a disk with two partitions labelled rootfs")
}

// testGarbagePrimaryEntries: the primary table's entry array is garbage
// (its CRC fails): the kernel finds no partitions (Debian's does not fall
// back to the backup by itself), the init rewrites the primary from the
// backup and has the kernel read it again, and the device boots
// persistent; the host then finds the primary table byte for byte as built.
func testGarbagePrimaryEntries(t *testing.T, img image) {
	want := readGPTCopy(t, img.path, true)
	garbage := make([]byte, len(want.entries))
	rand.New(rand.NewSource(21)).Read(garbage)
	writeAt(t, img.path, want.entriesOff, garbage)
	vm := boot(t, img)
	expect(t, vm, "ovroot: /dev/vda: primary GPT not valid (GPT header at LBA 1: bad CRC of the entry array at LBA 2): rewriting it from the backup at LBA ")
	expect(t, vm, "ovroot: /dev/vda: primary GPT repaired from the backup; partitions read again")
	expect(t, vm, "ovroot: mounted /dev/vda3 (ext4, rw) on /overlay")
	expect(t, vm, "GUEST: ready")
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "the primary GPT of /dev/vda was repaired from its backup at boot") {
		t.Errorf("ovrootctl status does not report the repair:\n%s", st)
	}
	powerOff(t, vm)
	got := readGPTCopy(t, img.path, true)
	if !bytes.Equal(got.header, want.header) || !bytes.Equal(got.entries, want.entries) {
		t.Errorf("the repaired primary GPT differs from the one built")
	}
}

// testStaleBackup: the backup table names the data partition otherwise
// (valid CRCs: a tool that wrote only one copy): the kernel uses the
// primary, and the init rewrites the backup from it.
func testStaleBackup(t *testing.T, img image) {
	want := readGPTCopy(t, img.path, false)
	stale := readGPTCopy(t, img.path, false)
	stale.setName(2, "stale")
	stale.write(t, img.path)
	vm := boot(t, img)
	expect(t, vm, "ovroot: /dev/vda: the backup GPT disagreed with the primary; rewritten from the primary (the table the kernel uses)")
	expect(t, vm, "ovroot: mounted /dev/vda3 (ext4, rw) on /overlay")
	expect(t, vm, "GUEST: ready")
	powerOff(t, vm)
	got := readGPTCopy(t, img.path, false)
	if !bytes.Equal(got.header, want.header) || !bytes.Equal(got.entries, want.entries) {
		t.Errorf("the rewritten backup GPT differs from the one built")
	}
}

// testRootNotSquashfs: the partition labelled rootfs holds garbage (a
// label on the wrong partition, a root overwritten): the error says what
// it holds, and the data partition is not touched.
func testRootNotSquashfs(t *testing.T, img image) {
	garbage := make([]byte, 1<<20)
	rand.New(rand.NewSource(22)).Read(garbage)
	writePart(t, img, layout.RootLabel, 0, garbage)
	expectNoRoot(t, boot(t, img), "root partition /dev/vda2 (PARTLABEL=rootfs) holds unknown content, not squashfs: not mounted (mount said: ",
		"a disk whose root holds garbage")
}

// expectNoRoot: the first boot attempt fails with reason, the init tries
// again instead of panicking, and nothing was mounted from the disk (what
// describes it).
func expectNoRoot(t *testing.T, vm *qemu.VM, reason, what string) {
	t.Helper()
	expect(t, vm, "ovroot: cannot build a root (attempt 1): "+reason)
	expect(t, vm, "ovroot: cannot build a root (attempt 2)")
	if c := vm.Console(); strings.Contains(c, "ovroot: mounted ") {
		t.Errorf("something was mounted from %s:\n%s", what, grepLines(c, "ovroot:"))
	}
	vm.Kill()
}
