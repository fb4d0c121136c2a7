// Package logwrites reads the write log that QEMU's blklogwrites block
// driver records, and rebuilds a disk as a power cut would leave it.
//
// The log is the Linux dm-log-writes format (kernel
// Documentation/admin-guide/device-mapper/log-writes.rst, structures from
// drivers/md/dm-log-writes.c; QEMU's block/blklogwrites.c writes the same):
// sector 0 holds a super block, then each entry is one sector holding its
// header followed by the sectors of its data. All fields are little-endian
// and "sector" means the log's own sector size, recorded in the super block.
//
// A disk with a volatile write cache (an eMMC, an SD card, a virtio disk
// with write-cache=on) guarantees only the writes that completed before a
// flush completed; of the writes after the last flush, any subset may have
// reached the medium when the power goes. A Cut names one such state:
// every entry before a flush boundary, and a chosen subset of the writes
// between that boundary and the next flush. Replay writes that state onto
// a copy of the disk as it was when the recording started.
//
// It does not run QEMU and knows nothing of filesystems.
package logwrites

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
)

// Magic is the super block's magic ("jswfswhr" read backwards, as the
// kernel's WRITE_LOG_MAGIC).
const Magic = 0x6a736677736872

// Version is the only format version there is.
const Version = 1

// Entry flags.
const (
	FlagFlush   = 1 << 0 // a cache flush completed here
	FlagFUA     = 1 << 1 // a write that was durable when it completed
	FlagDiscard = 1 << 2 // a discard: no data in the log
	FlagMark    = 1 << 3 // a user mark: no device write
	flagMask    = FlagFlush | FlagFUA | FlagDiscard | FlagMark
)

const (
	superSize = 8 + 8 + 8 + 4 // magic, version, nr_entries, sectorsize
	entrySize = 8 * 4         // sector, nr_sectors, flags, data_len
)

// Entry is one request the guest completed, in the order they completed.
type Entry struct {
	Offset int64  // where on the device, in bytes
	Length int64  // how many bytes (0 for a flush)
	Flags  uint64 // Flag* bits
	dataAt int64  // offset of the data in the log; -1 when it holds none
}

// IsFlush reports whether e is a completed cache flush.
func (e Entry) IsFlush() bool { return e.Flags&FlagFlush != 0 }

// IsWrite reports whether e changes the device (a write or a discard).
func (e Entry) IsWrite() bool { return e.Length > 0 && e.Flags&FlagMark == 0 }

func (e Entry) String() string {
	var kind string
	switch {
	case e.Flags&FlagMark != 0:
		kind = "mark"
	case e.Flags&FlagDiscard != 0:
		kind = "discard"
	case e.Length > 0:
		kind = "write"
	}
	if e.Flags&FlagFUA != 0 {
		kind += "+fua"
	}
	if e.IsFlush() {
		if kind != "" {
			kind += "+"
		}
		kind += "flush"
	}
	return fmt.Sprintf("%s %d+%d", kind, e.Offset, e.Length)
}

// Log is a parsed write log; the data stays in the reader.
type Log struct {
	r          io.ReaderAt
	SectorSize int64
	Entries    []Entry
	// Declared is the entry count of the super block. QEMU updates it only
	// on a flush, so a log whose recording was killed holds more entries
	// than it declares; Read reads on while entries are whole.
	Declared uint64
}

// Read parses a log of size bytes. It reads every entry the super block
// declares (a missing one is an error) and then every further whole
// entry, stopping at the first that is empty, malformed or cut short.
func Read(r io.ReaderAt, size int64) (*Log, error) {
	var sb [superSize]byte
	if _, err := r.ReadAt(sb[:], 0); err != nil {
		return nil, fmt.Errorf("write log: read super block: %w", err)
	}
	if m := binary.LittleEndian.Uint64(sb[0:]); m == 0 && size > superSize {
		// QEMU writes the super block at the first flush it logs.
		return nil, fmt.Errorf("write log: no super block: the device was never flushed while it was recorded")
	} else if m != Magic {
		return nil, fmt.Errorf("write log: magic %#x, want %#x (not a dm-log-writes log)", m, uint64(Magic))
	}
	if v := binary.LittleEndian.Uint64(sb[8:]); v != Version {
		return nil, fmt.Errorf("write log: version %d, want %d", v, Version)
	}
	l := &Log{r: r, Declared: binary.LittleEndian.Uint64(sb[16:]), SectorSize: int64(binary.LittleEndian.Uint32(sb[24:]))}
	ss := l.SectorSize
	if ss < 512 || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("write log: sector size %d, want a power of two >= 512", ss)
	}
	pos := ss
	for i := uint64(0); ; i++ {
		e, next, err := l.entryAt(pos, size)
		if err != nil {
			if i < l.Declared {
				return nil, fmt.Errorf("write log: entry %d of %d at byte %d: %w", i, l.Declared, pos, err)
			}
			break // the undeclared tail of a killed recording ends here
		}
		l.Entries = append(l.Entries, e)
		pos = next
	}
	return l, nil
}

var errEnd = errors.New("no entry")

// entryAt parses the entry whose header sector starts at pos.
func (l *Log) entryAt(pos, size int64) (Entry, int64, error) {
	ss := l.SectorSize
	if pos+ss > size {
		return Entry{}, 0, fmt.Errorf("header past the end of the log (%d bytes): %w", size, errEnd)
	}
	var h [entrySize]byte
	if _, err := l.r.ReadAt(h[:], pos); err != nil {
		return Entry{}, 0, err
	}
	sector := binary.LittleEndian.Uint64(h[0:])
	n := binary.LittleEndian.Uint64(h[8:])
	flags := binary.LittleEndian.Uint64(h[16:])
	dataLen := binary.LittleEndian.Uint64(h[24:])
	if flags&^flagMask != 0 {
		return Entry{}, 0, fmt.Errorf("flags %#x", flags)
	}
	if sector == 0 && n == 0 && flags == 0 && dataLen == 0 {
		return Entry{}, 0, errEnd // zeroes: never written
	}
	const maxSectors = 1 << 40
	if n > maxSectors || sector > maxSectors || dataLen > uint64(ss) {
		return Entry{}, 0, fmt.Errorf("implausible header: sector %d, %d sectors, data_len %d", sector, n, dataLen)
	}
	e := Entry{Offset: int64(sector) * ss, Length: int64(n) * ss, Flags: flags, dataAt: -1}
	next := pos + ss
	// A discard carries no data, a mark keeps its text (data_len bytes) in
	// the header sector; a write's data (QEMU logs a write of zeroes as
	// zeroes) follows in whole sectors.
	if flags&(FlagDiscard|FlagMark) == 0 && n > 0 {
		e.dataAt = next
		next += e.Length
		if next > size {
			return Entry{}, 0, fmt.Errorf("data of %s past the end of the log (%d bytes)", e, size)
		}
	}
	return e, next, nil
}

// Data returns what entry i wrote: its data, or zeroes for a discard
// (QEMU punches a hole in a raw file, which reads back as zeroes).
func (l *Log) Data(i int) ([]byte, error) {
	e := l.Entries[i]
	buf := make([]byte, e.Length)
	if e.dataAt < 0 {
		return buf, nil
	}
	if _, err := l.r.ReadAt(buf, e.dataAt); err != nil {
		return nil, fmt.Errorf("write log: data of entry %d (%s): %w", i, e, err)
	}
	return buf, nil
}

// Boundaries are the points of the log where the device's cache was empty:
// 0 (the recording's start) and just after every flush, as entry counts.
func (l *Log) Boundaries() []int {
	b := []int{0}
	for i, e := range l.Entries {
		if e.IsFlush() {
			b = append(b, i+1)
		}
	}
	return b
}

// Pending lists the writes after boundary b that the next flush (or the
// end of the log) would have made durable: the ones a power cut before
// that flush may lose, each independently.
func (l *Log) Pending(b int) []int {
	var p []int
	for i := b; i < len(l.Entries); i++ {
		e := l.Entries[i]
		if e.IsWrite() {
			p = append(p, i)
		}
		if e.IsFlush() {
			break
		}
	}
	return p
}

// Cut is the state a power cut leaves: every entry before Boundary, and of
// the writes pending after it, those listed in Apply (in log order).
type Cut struct {
	Boundary int
	Apply    []int
	Kind     string // none, all or subset: for reports
}

func (c Cut) String() string {
	return fmt.Sprintf("after entry %d + %s (%d pending writes)", c.Boundary, c.Kind, len(c.Apply))
}

// Cuts lists the states worth checking at boundary b: none of the pending
// writes, all of them, and subsets random subsets drawn from rng (each
// write kept with probability 1/2; FUA writes are durable once completed
// and are always kept). With no pending writes there is only one state.
func (l *Log) Cuts(b int, subsets int, rng *rand.Rand) []Cut {
	p := l.Pending(b)
	var fua []int
	for _, i := range p {
		if l.Entries[i].Flags&FlagFUA != 0 {
			fua = append(fua, i)
		}
	}
	cuts := []Cut{{Boundary: b, Apply: fua, Kind: "none"}}
	if len(p) == len(fua) {
		return cuts
	}
	cuts = append(cuts, Cut{Boundary: b, Apply: p, Kind: "all"})
	if len(p)-len(fua) < 2 {
		return cuts // none and all are every subset there is
	}
	for s := 0; s < subsets; s++ {
		var apply []int
		for _, i := range p {
			if l.Entries[i].Flags&FlagFUA != 0 || rng.Intn(2) == 1 {
				apply = append(apply, i)
			}
		}
		cuts = append(cuts, Cut{Boundary: b, Apply: apply, Kind: "subset"})
	}
	return cuts
}

// Replay writes the entries [from, to) onto dst, in log order.
func (l *Log) Replay(dst io.WriterAt, from, to int) error {
	for i := from; i < to; i++ {
		if err := l.apply(dst, i); err != nil {
			return err
		}
	}
	return nil
}

// ReplayCut writes the state c onto dst, which must hold the device as it
// was when the recording started.
func (l *Log) ReplayCut(dst io.WriterAt, c Cut) error {
	if err := l.Replay(dst, 0, c.Boundary); err != nil {
		return err
	}
	return l.ApplyTail(dst, c)
}

// ApplyTail writes only c's pending writes, onto a dst that already holds
// every entry before c.Boundary.
func (l *Log) ApplyTail(dst io.WriterAt, c Cut) error {
	for _, i := range c.Apply {
		if i < c.Boundary {
			return fmt.Errorf("cut %s: entry %d is before the boundary", c, i)
		}
		if err := l.apply(dst, i); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) apply(dst io.WriterAt, i int) error {
	if !l.Entries[i].IsWrite() {
		return nil
	}
	data, err := l.Data(i)
	if err != nil {
		return err
	}
	if _, err := dst.WriteAt(data, l.Entries[i].Offset); err != nil {
		return fmt.Errorf("write log: replay entry %d (%s): %w", i, l.Entries[i], err)
	}
	return nil
}

// Section is a WriterAt for one partition of a device: it takes device
// offsets, writes what falls in [Start, Start+Size) to W at partition
// offsets, and counts the writes that fall (wholly or partly) outside.
type Section struct {
	W           io.WriterAt
	Start, Size int64
	Outside     int
}

// WriteAt writes the part of p that lies inside the section.
func (s *Section) WriteAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	lo, hi := max(off, s.Start), min(end, s.Start+s.Size)
	if lo > off || hi < end {
		s.Outside++
	}
	if lo >= hi {
		return len(p), nil
	}
	if _, err := s.W.WriteAt(p[lo-off:hi-off], lo-s.Start); err != nil {
		return 0, err
	}
	return len(p), nil
}
