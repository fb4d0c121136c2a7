package boot

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
)

// makeExt4 makes an ext4 filesystem labelled label on the open device
// (go-diskfs: no mke2fs in the initramfs), so that a power cut at any
// moment of it leaves a partition that the next boot still finds blank:
// everything Probe looks at (the first MiB, and the magic of the backup
// superblocks) is held back in memory and written only after the rest of
// the filesystem is on the disk and synced. A cut during those last few
// writes is the only window, and what it leaves is a filesystem whose
// backup superblocks lack their magic, which mounts.
func makeExt4(f *os.File, size int64, label string) error {
	return formatExt4(f, size, label, 0)
}

// errPowerCut is what the test-only write limit returns.
var errPowerCut = errors.New("power cut (test)")

func formatExt4(f *os.File, size int64, label string, failAfter int) error {
	d, err := newDeferred(file.New(f, false), f, size)
	if err != nil {
		return err
	}
	d.failAfter = failAfter
	// Without reserved GDT blocks: go-diskfs v1.9.4 writes a resize inode
	// that e2fsck calls invalid ("Resize inode not valid. Recreate?"), which
	// also stops e2fsck -p. Online resize of the data partition is not used.
	params := &ext4.Params{VolumeName: label, Features: []ext4.FeatureOpt{ext4.WithFeatureReservedGDTBlocksForExpansion(false)},
		SectorsPerBlock: sectorsPerBlock(size)}
	if _, err := ext4.Create(d, size, 0, 512, params); err != nil {
		return err
	}
	return d.commit()
}

// sectorsPerBlock picks the block size as mke2fs does: 1 KiB blocks for
// a small partition (below 512 MiB), 4 KiB above. It matters for the
// format's time too: go-diskfs v1.9.4 does work per block group, and per
// inode bitmap bit past the group's inodes (a fmt.Sprintf each), so 4 KiB
// blocks (32768 blocks a group) make a 4 GiB format several times cheaper
// than 1 KiB blocks (8192). Below 512 MiB, 1 KiB blocks keep a backup
// superblock in group 1 at 8 MiB, where the probe and e2fsck -b find it.
func sectorsPerBlock(size int64) uint8 {
	if size < 512<<20 {
		return 2
	}
	return 8
}

// deferred is a go-diskfs backend that holds back the writes to the bytes
// Probe reads, until commit.
type deferred struct {
	backend.Storage
	f         *os.File
	w         backend.WritableFile
	head      []byte           // the first blankProbeBytes, as written so far
	magicAt   []int64          // offsets of the backup superblock magics Probe reads
	magic     map[int64][]byte // their held-back bytes
	writes    int
	failAfter int // tests: fail every write after this many (0 = never)

	noZeroRange bool  // the file refused fallocate(FALLOC_FL_ZERO_RANGE)
	zeroed      int64 // bytes zeroed with it
}

func newDeferred(s backend.Storage, f *os.File, size int64) (*deferred, error) {
	w, err := s.Writable()
	if err != nil {
		return nil, err
	}
	n := int64(blankProbeBytes)
	if size < n {
		n = size
	}
	d := &deferred{Storage: s, f: f, w: w, head: make([]byte, n), magic: map[int64][]byte{}}
	if _, err := f.ReadAt(d.head, 0); err != nil {
		return nil, fmt.Errorf("read the start of the partition: %w", err)
	}
	for _, b := range ext4BackupCandidates(size) {
		d.magicAt = append(d.magicAt, b.offset()+ext4MagicOffset)
	}
	return d, nil
}

// Writable returns d itself: every write goes through WriteAt below.
func (d *deferred) Writable() (backend.WritableFile, error) { return d, nil }

// WriteAt keeps writes to the head and to the magic bytes in memory.
func (d *deferred) WriteAt(p []byte, off int64) (int, error) {
	d.writes++
	if d.failAfter > 0 && d.writes > d.failAfter {
		return 0, errPowerCut
	}
	n := len(p)
	headLen := int64(len(d.head))
	if off < headLen {
		end := off + int64(len(p))
		if end > headLen {
			end = headLen
		}
		copy(d.head[off:end], p[:end-off])
		p, off = p[end-off:], end
		if len(p) == 0 {
			return n, nil
		}
	}
	var patched []byte
	for _, m := range d.magicAt {
		for i := int64(0); i < ext4MagicSize; i++ {
			pos := m + i
			if pos < off || pos >= off+int64(len(p)) {
				continue
			}
			if patched == nil {
				patched = append([]byte(nil), p...)
			}
			d.magic[pos] = []byte{p[pos-off]}
			patched[pos-off] = 0
		}
	}
	if patched != nil {
		p = patched
	}
	if len(p) >= zeroRangeMin && allZero(p) && d.zeroRange(off, int64(len(p))) {
		return n, nil
	}
	if _, err := d.w.WriteAt(p, off); err != nil {
		return 0, err
	}
	return n, nil
}

// zeroRangeMin is the smallest all-zero write that is turned into a zeroing
// request: go-diskfs zeroes every inode table and the journal with plain
// writes, which under emulation (and on slow flash) is most of the format.
const zeroRangeMin = 64 << 10

var zeroPage [zeroRangeMin]byte

// allZero reports whether p holds only zero bytes (compared a page at a
// time: bytes.Equal is the runtime's vectorised memequal).
func allZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeroPage))
		if !bytes.Equal(p[:n], zeroPage[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

// ReadAt reads what was written, held-back bytes included.
func (d *deferred) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.Storage.ReadAt(p, off)
	for i := 0; i < n; i++ {
		pos := off + int64(i)
		if pos < int64(len(d.head)) {
			p[i] = d.head[pos]
		} else if b, ok := d.magic[pos]; ok {
			p[i] = b[0]
		}
	}
	return n, err
}

// commit syncs the filesystem, then writes the held-back head and syncs,
// then the backup superblock magics and syncs. The head and the magics
// are flushed apart: a disk cache may write back a later write before an
// earlier one, and a magic on the disk without the head would make the
// partition probe as a damaged ext4 rather than blank.
func (d *deferred) commit() error {
	if err := d.f.Sync(); err != nil {
		return err
	}
	if _, err := d.f.WriteAt(d.head, 0); err != nil {
		return err
	}
	if err := d.f.Sync(); err != nil {
		return err
	}
	for pos, b := range d.magic {
		if _, err := d.f.WriteAt(b, pos); err != nil {
			return err
		}
	}
	return d.f.Sync()
}
