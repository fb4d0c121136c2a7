package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Fuzz targets for what the init reads from a disk it did not write: the
// GPT (and its grow and repair), a partition's first bytes (the probe and
// the ext4 superblock), sysfs uevents with the partition selection, and
// e2fsck's undo file. A device in the field can hold anything there.

// sparseReader reads data, then zeros up to size.
type sparseReader struct {
	data []byte
	size int64
}

func (r sparseReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.size {
		return 0, fmt.Errorf("read %d bytes at %d: outside %d bytes", len(p), off, r.size)
	}
	clear(p)
	if off < int64(len(r.data)) {
		copy(p, r.data[off:])
	}
	return len(p), nil
}

// FuzzProbe: any partition content gets one verdict that matches its
// bytes: blank only when the first MiB is all 0x00 or all 0xFF and no
// backup superblock is there, ext4 and squashfs only with their magic.
// ext4Size never panics and gives only block sizes ext4 has.
func FuzzProbe(f *testing.F) {
	ext4 := make([]byte, 2048)
	binary.LittleEndian.PutUint16(ext4[1024+0x38:], ext4Magic)
	binary.LittleEndian.PutUint32(ext4[1024+4:], 4096)
	binary.LittleEndian.PutUint32(ext4[1024+0x18:], 2)
	f.Add(ext4, uint32(0))
	f.Add([]byte("hsqs"), uint32(4096))
	f.Add(bytes.Repeat([]byte{0xFF}, 4096), uint32(1<<21))
	f.Add([]byte{}, uint32(10<<20))
	wiped := make([]byte, 8193*1024+1024)
	binary.LittleEndian.PutUint16(wiped[8193*1024+0x38:], ext4Magic)
	f.Add(wiped[8193*1024-16:], uint32(0)) // shifted: the magic lands elsewhere
	f.Fuzz(func(t *testing.T, data []byte, extra uint32) {
		size := int64(len(data)) + int64(extra%(256<<20))
		r := sparseReader{data, size}
		got, err := Probe(r, size)
		if err != nil {
			t.Fatalf("Probe of %d bytes in memory: %v", size, err)
		}
		first := make([]byte, min(size, blankProbeBytes))
		r.ReadAt(first, 0)
		_, backup := findExt4Backup(r, size)
		hasMagic := len(first) >= ext4SuperblockOffset+int(ext4MagicOffset)+2 &&
			binary.LittleEndian.Uint16(first[ext4SuperblockOffset+ext4MagicOffset:]) == ext4Magic
		switch got {
		case ContentBlank:
			if !allBytes(first, 0) && !allBytes(first, 0xFF) || backup {
				t.Fatalf("blank, but the first MiB is not erased (or a backup superblock is there: %v)", backup)
			}
		case ContentSquashfs:
			if !bytes.HasPrefix(first, []byte("hsqs")) {
				t.Fatalf("squashfs without its magic")
			}
		case ContentExt4:
			if !hasMagic {
				t.Fatalf("ext4 without its magic")
			}
		case ContentExt4Damaged:
			if !backup || hasMagic {
				t.Fatalf("damaged ext4: backup superblock %v, primary magic %v", backup, hasMagic)
			}
		case ContentUnknown:
			if allBytes(first, 0) || allBytes(first, 0xFF) || hasMagic || backup {
				t.Fatalf("unknown, for content a verdict exists for")
			}
		default:
			t.Fatalf("verdict %q", got)
		}
		if len(data) >= ext4SuperblockOffset {
			if _, bs, err := ext4Size(data[ext4SuperblockOffset:]); err == nil && (bs < 1024 || bs > 1<<16 || bs&(bs-1) != 0) {
				t.Fatalf("ext4Size gave a block size of %d", bs)
			}
		}
	})
}

// fuzzDisk is a memDisk that fails the test on a write or a resize
// outside the disk, and on a write into the source table's usable range:
// the GPT code writes only tables (and the protective MBR), never a
// partition's data.
type fuzzDisk struct {
	*memDisk
	t                   *testing.T
	firstUsable, lastUs uint64 // of the table the grow starts from; 0, 0 = none
	parts               []gptEntry
}

func (d *fuzzDisk) WriteAt(p []byte, off int64) (int, error) {
	ss := int64(d.ss)
	if off < 0 || off+int64(len(p)) > int64(len(d.data)) {
		d.t.Fatalf("write of %d bytes at %d: outside the %d-byte disk", len(p), off, len(d.data))
	}
	first, last := uint64(off/ss), uint64((off+int64(len(p))-1)/ss)
	if d.lastUs != 0 && first <= d.lastUs && last >= d.firstUsable {
		d.t.Fatalf("write of LBAs %d-%d into the usable range %d-%d (partition data)", first, last, d.firstUsable, d.lastUs)
	}
	for _, r := range d.parts {
		if first <= r.LastLBA && last >= r.FirstLBA {
			d.t.Fatalf("write of LBAs %d-%d into a partition (LBA %d-%d)", first, last, r.FirstLBA, r.LastLBA)
		}
	}
	return d.memDisk.WriteAt(p, off)
}

func (d *fuzzDisk) ResizePartition(n int, start, length int64) error {
	if start < 0 || length <= 0 || start+length > int64(len(d.data)) {
		d.t.Fatalf("partition %d resized to %d bytes at %d: outside the %d-byte disk", n, length, start, len(d.data))
	}
	return d.memDisk.ResizePartition(n, start, length)
}

// fixGPTCRCs recomputes the CRCs of a GPT header at lba (and of its entry
// array, when it lies in data), so that mutated tables get past the CRC
// checks and reach the logic behind them.
func fixGPTCRCs(data []byte, lba int64) {
	const ss = 512
	if lba < 1 || (lba+1)*ss > int64(len(data)) {
		return
	}
	h := data[lba*ss : (lba+1)*ss]
	if string(h[:8]) != "EFI PART" {
		return
	}
	le := binary.LittleEndian
	n := int64(le.Uint32(h[80:])) * int64(le.Uint32(h[84:]))
	if el := int64(le.Uint64(h[72:])); n > 0 && n <= gptMaxEntriesBytes && el > 0 && el < int64(len(data))/ss && el*ss+n <= int64(len(data)) {
		le.PutUint32(h[88:], crc32.ChecksumIEEE(data[el*ss:el*ss+n]))
	}
	hs := int(le.Uint32(h[12:]))
	if hs < gptHeaderLen || hs > ss {
		return
	}
	le.PutUint32(h[16:], 0)
	le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
}

// smallGPTDisk is a 128-sector disk with three small partitions, its GPT
// written by go-diskfs.
func smallGPTDisk(f *testing.F) []byte {
	p := filepath.Join(f.TempDir(), "small")
	d, err := diskfs.Create(p, 128*512, diskfs.SectorSize512)
	if err != nil {
		f.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: "5b2a9c3e-1111-4f00-8000-000000000000"}
	for i, r := range [][2]uint64{{34, 49}, {50, 69}, {70, 94}} {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1, Start: r[0], End: r[1], Type: gpt.LinuxFilesystem,
			Name: []string{"boot", "rootfs", "rootfs_data"}[i], GUID: fmt.Sprintf("5b2a9c3e-2222-4f00-8000-00000000000%d", i+1),
		})
	}
	if err := d.Partition(table); err != nil {
		f.Fatal(err)
	}
	d.Close()
	img, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	return img
}

// FuzzGrowGPT runs the boot's GPT grow and repair on any disk: a small
// image (mutated, with its CRCs fixed up or not) followed by extra zero
// sectors. It never writes outside the disk or into the usable range of
// the table it starts from, never writes to a disk without a valid table,
// and when it returns nil the disk has a valid primary and backup that
// agree, every other partition as it was and the grown one only longer,
// and a second run writes nothing.
func FuzzGrowGPT(f *testing.F) {
	img := smallGPTDisk(f)
	f.Add(img, uint16(0), uint8(0))
	f.Add(img, uint16(2048), uint8(0))
	f.Add(img, uint16(1), uint8(1))
	broken := append([]byte(nil), img...)
	broken[512+20] ^= 0xff // primary header CRC
	f.Add(broken, uint16(4096), uint8(1))
	f.Add(img[:len(img)/2], uint16(64), uint8(1))
	f.Fuzz(func(t *testing.T, img []byte, extra uint16, flags uint8) {
		size := (len(img)+511)/512*512 + int(extra)*512
		m := &memDisk{data: make([]byte, size), ss: 512, kernel: map[int]int64{}}
		copy(m.data, img)
		imgSectors := int64((len(img) + 511) / 512)
		if flags&1 != 0 {
			fixGPTCRCs(m.data, 1)
			fixGPTCRCs(m.data, imgSectors-1)
		}
		sectors := uint64(size / 512)
		before := readDiskGPT(m, sectors, 512)
		var src *gptTable
		switch {
		case before.PrimaryErr == nil:
			src = &before.Primary
		case before.BackupErr == nil:
			src = &before.Backup
		}
		d := &fuzzDisk{memDisk: m, t: t}
		if src != nil {
			d.firstUsable, d.lastUs = src.Header.FirstUsableLBA, src.Header.LastUsableLBA
			for i := 0; i < int(src.Header.NumEntries); i++ {
				if src.used(i) {
					e := src.entry(i)
					d.parts = append(d.parts, e)
					m.kernel[i+1] = int64(e.LastLBA-e.FirstLBA+1) * 512
				}
			}
		}
		part := 3
		grow := flags&2 == 0
		_, err := growGPT(d, part, grow, func(string, ...any) {})
		if src == nil {
			if m.writes() > 0 {
				t.Fatalf("%d writes to a disk with no valid GPT (primary: %v; backup: %v)", m.writes(), before.PrimaryErr, before.BackupErr)
			}
			return
		}
		if err != nil {
			return
		}
		after := readDiskGPT(m, sectors, 512)
		if after.PrimaryErr != nil || after.BackupErr != nil {
			t.Fatalf("after a grow that returned nil: primary %v, backup %v", after.PrimaryErr, after.BackupErr)
		}
		p, b := after.Primary, after.Backup
		if !bytes.Equal(p.Entries, b.Entries) || p.Header.AlternateLBA != b.Header.MyLBA || b.Header.AlternateLBA != 1 {
			t.Fatalf("primary and backup disagree: %+v / %+v", p.Header, b.Header)
		}
		es := int(src.Header.EntrySize)
		for i := 0; i < int(src.Header.NumEntries); i++ {
			old, cur := src.Entries[i*es:(i+1)*es], p.Entries[i*es:(i+1)*es]
			if i != part-1 {
				if !bytes.Equal(old, cur) {
					t.Fatalf("entry %d changed", i+1)
				}
				continue
			}
			// The grown entry: only its last LBA, only up.
			o, c := append([]byte(nil), old...), append([]byte(nil), cur...)
			copy(o[40:48], make([]byte, 8))
			copy(c[40:48], make([]byte, 8))
			if !bytes.Equal(o, c) || p.entry(i).LastLBA < src.entry(i).LastLBA || (p.entry(i).LastLBA != src.entry(i).LastLBA && p.entry(i).LastLBA > p.Header.LastUsableLBA) {
				t.Fatalf("partition %d went from %+v to %+v (usable up to %d)", i+1, src.entry(i), p.entry(i), p.Header.LastUsableLBA)
			}
		}
		m.log = nil
		d.firstUsable, d.lastUs = p.Header.FirstUsableLBA, p.Header.LastUsableLBA
		if _, err := growGPT(d, part, grow, func(string, ...any) {}); err != nil || m.writes() > 0 {
			t.Fatalf("second grow: %v, %d writes", err, m.writes())
		}
	})
}

// FuzzSelectPartitions: whatever sysfs says, a label is found only on a
// partition that carries exactly it, never both found and missing, and
// two partitions of one disk with a wanted label are an error, never a
// guess.
func FuzzSelectPartitions(f *testing.F) {
	f.Add("DEVNAME=vda\nDEVTYPE=disk\nMAJOR=254\nMINOR=0\x00DEVNAME=vda3\nDEVTYPE=partition\nPARTN=3\nPARTNAME=rootfs\x00DEVNAME=vda4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=rootfs_data")
	f.Add("DEVNAME=vda3\nDEVTYPE=partition\nPARTNAME=rootfs\x00DEVNAME=vda4\nDEVTYPE=partition\nPARTNAME=rootfs\x00DEVNAME=vdb1\nDEVTYPE=partition\nPARTNAME=rootfs")
	f.Fuzz(func(t *testing.T, s string) {
		var devs []BlockDev
		for _, u := range strings.Split(s, "\x00") {
			d, err := parseUevent([]byte(u), "vd"+string(rune('a'+len(devs)%3)))
			if err == nil {
				devs = append(devs, d)
			}
		}
		labels := []string{"rootfs", "rootfs_data", "rootfs_a"}
		sel, err := selectPartitions(devs, labels...)
		perDisk := map[string]map[string]int{}
		for _, d := range devs {
			if d.Partition {
				if perDisk[d.PartLabel] == nil {
					perDisk[d.PartLabel] = map[string]int{}
				}
				perDisk[d.PartLabel][d.Disk]++
			}
		}
		if err != nil {
			return
		}
		for _, l := range labels {
			d, found := sel.Found[l]
			missing := false
			for _, m := range sel.Missing {
				missing = missing || m == l
			}
			if found == missing {
				t.Fatalf("label %s: found %v, missing %v", l, found, missing)
			}
			if found && (!d.Partition || d.PartLabel != l) {
				t.Fatalf("label %s found on %+v", l, d)
			}
			if found && perDisk[l][d.Disk] > 1 {
				t.Fatalf("label %s is on %d partitions of %s, and one was taken", l, perDisk[l][d.Disk], d.Disk)
			}
		}
	})
}

// FuzzParseUndo: e2fsck's undo file is read back after a power cut and,
// if whole, written over the data partition. Any bytes are refused or
// give extents inside the file and inside what the header claims; never
// a panic or an allocation the file's size does not bound.
func FuzzParseUndo(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, undoHeaderSize))
	f.Add(append([]byte(undoMagic), make([]byte, 4096)...))
	f.Add(undoFile(5, bytes.Repeat([]byte("saved"), 300)))
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := parseUndo(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, e := range u.extents {
			if e.size <= 0 || e.off < 0 || e.dataOff < 0 || e.dataOff+e.size > int64(len(data)) {
				t.Fatalf("extent %+v of a %d-byte file", e, len(data))
			}
		}
	})
}

// undoFile is a whole undo file of 1 KiB blocks that saves data as the
// bytes of filesystem block fsblk: header, one key block, the data.
func undoFile(fsblk uint64, data []byte) []byte {
	const bs = 1024
	le := binary.LittleEndian
	n := (len(data) + bs - 1) / bs
	f := make([]byte, (2+n)*bs)
	h := f[:undoHeaderSize]
	copy(h, undoMagic)
	le.PutUint64(h[8:], 1)  // keys
	le.PutUint64(h[24:], 1) // key block at block 1
	le.PutUint32(h[32:], bs)
	le.PutUint32(h[36:], bs)
	le.PutUint32(h[44:], undoFinished)
	le.PutUint32(h[undoHeaderSize-4:], e2crc32c(^uint32(0), h[:undoHeaderSize-4]))
	kb := f[bs : 2*bs]
	le.PutUint32(kb, undoKeyMagic)
	le.PutUint64(kb[undoKeySize:], fsblk)
	le.PutUint32(kb[undoKeySize+8:], e2crc32c(^uint32(0), data))
	le.PutUint32(kb[undoKeySize+12:], uint32(len(data)))
	le.PutUint32(kb[4:], e2crc32c(^uint32(0), kb))
	copy(f[2*bs:], data)
	return f
}
