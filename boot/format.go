package boot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// makeExt4 makes an ext4 filesystem labelled label on the open device
// (mkfsExt4: no mke2fs in the initramfs), so that a power cut at any
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
	d, err := newDeferred(f, size)
	if err != nil {
		return err
	}
	d.failAfter = failAfter
	if err := mkfsExt4(d, d.zero, size, label, time.Now()); err != nil {
		return err
	}
	return d.commit()
}

// sectorsPerBlock picks the block size as mke2fs does: 1 KiB blocks for
// a small partition (below 512 MiB), 4 KiB above. 4 KiB
// blocks (32768 blocks a group) keep the block groups, and so the
// format's writes, few. Below 512 MiB, 1 KiB blocks keep a backup
// superblock in group 1 at 8 MiB, where the probe and e2fsck -b find it.
func sectorsPerBlock(size int64) uint8 {
	if size < 512<<20 {
		return 2
	}
	return 8
}

// deferred is an io.WriterAt on the partition that holds back the writes
// to the bytes Probe reads, until commit.
type deferred struct {
	f         *os.File
	head      []byte           // the first blankProbeBytes, as written so far
	magicAt   []int64          // offsets of the backup superblock magics Probe reads
	magic     map[int64][]byte // their held-back bytes
	writes    int
	failAfter int // tests: fail every write after this many (0 = never)

	noZeroRange bool  // the file refused fallocate(FALLOC_FL_ZERO_RANGE)
	zeroed      int64 // bytes zeroed with it

	// out is where commit writes and syncs: f, or in tests a recorder
	// that cuts the power between any two of those writes.
	out syncWriterAt
}

// syncWriterAt is what commit needs of the partition.
type syncWriterAt interface {
	io.WriterAt
	Sync() error
}

func newDeferred(f *os.File, size int64) (*deferred, error) {
	n := int64(blankProbeBytes)
	if size < n {
		n = size
	}
	d := &deferred{f: f, out: f, head: make([]byte, n), magic: map[int64][]byte{}}
	if _, err := f.ReadAt(d.head, 0); err != nil {
		return nil, fmt.Errorf("read the start of the partition: %w", err)
	}
	for _, b := range ext4BackupCandidates(size) {
		d.magicAt = append(d.magicAt, b.offset()+ext4MagicOffset)
	}
	return d, nil
}

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
	if _, err := d.f.WriteAt(p, off); err != nil {
		return 0, err
	}
	return n, nil
}

// zero makes n bytes at off read back as zeros: fallocate, or written
// zeros where the device refuses it.
func (d *deferred) zero(off, n int64) error {
	if d.zeroRange(off, n) {
		return nil
	}
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := d.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// zeroRangeMin is the smallest all-zero write that is turned into a zeroing
// request (the zeros written where the device refuses fallocate).
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

// commit syncs the filesystem, then writes the held-back head and syncs,
// then the backup superblock magics and syncs. The head and the magics
// are flushed apart: a disk cache may write back a later write before an
// earlier one, and a magic on the disk without the head would make the
// partition probe as a damaged ext4 rather than blank.
func (d *deferred) commit() error {
	if err := d.out.Sync(); err != nil {
		return err
	}
	if _, err := d.out.WriteAt(d.head, 0); err != nil {
		return err
	}
	if err := d.out.Sync(); err != nil {
		return err
	}
	for pos, b := range d.magic {
		if _, err := d.out.WriteAt(b, pos); err != nil {
			return err
		}
	}
	return d.out.Sync()
}
