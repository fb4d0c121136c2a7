package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// A small GPT reader and writer (UEFI spec 2.10, section 5.3), for growing
// the data partition on a disk larger than the image and for repairing a
// primary table a power cut left half-written. go-diskfs has a GPT
// package, but its Write writes the primary before the backup and the
// protective MBR with them in one go; the crash-safe order (backup, flush,
// primary, flush) and the repair of one table from the other need the
// headers and the entry array as separate pieces, which this gives in
// about two hundred lines.

// gptHeader is the on-disk GPT header (92 bytes, little-endian).
type gptHeader struct {
	Signature      [8]byte
	Revision       uint32
	HeaderSize     uint32
	HeaderCRC      uint32
	Reserved       uint32
	MyLBA          uint64
	AlternateLBA   uint64
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	DiskGUID       [16]byte
	EntriesLBA     uint64
	NumEntries     uint32
	EntrySize      uint32
	EntriesCRC     uint32
}

const (
	gptHeaderLen = 92
	// gptMaxEntriesBytes bounds the entry array read from a header (the
	// usual one is 128 entries of 128 bytes).
	gptMaxEntriesBytes = 1 << 20
	// gptAlign is where the grown data partition ends: a multiple of 1 MiB,
	// as every partition of the image is aligned.
	gptAlign = 1 << 20
)

var gptSignature = [8]byte{'E', 'F', 'I', ' ', 'P', 'A', 'R', 'T'}

// gptTable is one copy of the table: a header and its entry array.
type gptTable struct {
	Header  gptHeader
	Entries []byte
}

// gptEntry is the part of a partition entry the grow reads and changes.
type gptEntry struct {
	FirstLBA, LastLBA uint64
}

func (t gptTable) entry(i int) gptEntry {
	b := t.Entries[i*int(t.Header.EntrySize):]
	return gptEntry{FirstLBA: binary.LittleEndian.Uint64(b[32:]), LastLBA: binary.LittleEndian.Uint64(b[40:])}
}

func (t gptTable) used(i int) bool {
	b := t.Entries[i*int(t.Header.EntrySize):]
	return !bytes.Equal(b[:16], make([]byte, 16))
}

func (t gptTable) setLast(i int, last uint64) {
	binary.LittleEndian.PutUint64(t.Entries[i*int(t.Header.EntrySize)+40:], last)
}

// entriesSectors is how many sectors the entry array takes.
func (t gptTable) entriesSectors(ss int) uint64 {
	n := uint64(t.Header.NumEntries) * uint64(t.Header.EntrySize)
	return (n + uint64(ss) - 1) / uint64(ss)
}

// clone copies the table (the entries are a slice).
func (t gptTable) clone() gptTable {
	t.Entries = append([]byte(nil), t.Entries...)
	return t
}

// encodeHeader is the header sector with both CRCs computed.
func (t gptTable) encodeHeader(ss int) []byte {
	h := t.Header
	h.EntriesCRC = crc32.ChecksumIEEE(t.Entries)
	h.HeaderCRC = 0
	if h.HeaderSize < gptHeaderLen || int(h.HeaderSize) > ss {
		h.HeaderSize = gptHeaderLen
	}
	sector := make([]byte, ss)
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, h)
	copy(sector, buf.Bytes())
	binary.LittleEndian.PutUint32(sector[16:], crc32.ChecksumIEEE(sector[:h.HeaderSize]))
	return sector
}

// errNoGPT is a sector without the GPT signature: not a GPT disk (or that
// copy of the table was never written).
var errNoGPT = errors.New("no GPT signature")

// readGPT reads and checks the table whose header is at lba, as the kernel
// does (block/partitions/efi.c, is_gpt_valid): signature, header size and
// CRC, my_lba, the usable range within the disk, the entry array's CRC.
func readGPT(r io.ReaderAt, lba, sectors uint64, ss int) (gptTable, error) {
	var t gptTable
	if lba == 0 || lba >= sectors {
		return t, fmt.Errorf("GPT header LBA %d is outside the disk (%d sectors)", lba, sectors)
	}
	sector := make([]byte, ss)
	if _, err := r.ReadAt(sector, int64(lba)*int64(ss)); err != nil {
		return t, fmt.Errorf("read GPT header at LBA %d: %w", lba, err)
	}
	if err := binary.Read(bytes.NewReader(sector), binary.LittleEndian, &t.Header); err != nil {
		return t, err
	}
	h := t.Header
	if h.Signature != gptSignature {
		return t, errNoGPT
	}
	if h.HeaderSize < gptHeaderLen || int(h.HeaderSize) > ss {
		return t, fmt.Errorf("GPT header at LBA %d: header size %d", lba, h.HeaderSize)
	}
	check := append([]byte(nil), sector[:h.HeaderSize]...)
	binary.LittleEndian.PutUint32(check[16:], 0)
	if crc32.ChecksumIEEE(check) != h.HeaderCRC {
		return t, fmt.Errorf("GPT header at LBA %d: bad header CRC", lba)
	}
	if h.MyLBA != lba {
		return t, fmt.Errorf("GPT header at LBA %d says it is at LBA %d", lba, h.MyLBA)
	}
	if h.FirstUsableLBA > h.LastUsableLBA || h.LastUsableLBA >= sectors {
		return t, fmt.Errorf("GPT header at LBA %d: usable LBAs %d-%d do not fit the disk (%d sectors; an image written to a smaller disk?)", lba, h.FirstUsableLBA, h.LastUsableLBA, sectors)
	}
	n := uint64(h.NumEntries) * uint64(h.EntrySize)
	if h.EntrySize < 128 || h.EntrySize%8 != 0 || n == 0 || n > gptMaxEntriesBytes {
		return t, fmt.Errorf("GPT header at LBA %d: %d entries of %d bytes", lba, h.NumEntries, h.EntrySize)
	}
	if h.EntriesLBA == 0 || h.EntriesLBA+t.entriesSectors(ss) > sectors {
		return t, fmt.Errorf("GPT header at LBA %d: entry array at LBA %d does not fit the disk", lba, h.EntriesLBA)
	}
	t.Entries = make([]byte, n)
	if _, err := r.ReadAt(t.Entries, int64(h.EntriesLBA)*int64(ss)); err != nil {
		return t, fmt.Errorf("read GPT entries at LBA %d: %w", h.EntriesLBA, err)
	}
	if crc32.ChecksumIEEE(t.Entries) != h.EntriesCRC {
		return t, fmt.Errorf("GPT header at LBA %d: bad CRC of the entry array at LBA %d", lba, h.EntriesLBA)
	}
	return t, nil
}

// checkLayout refuses a table that is valid to the kernel but that no
// partitioning tool writes: an entry array or header inside the usable
// range, or a partition outside it or ending before it starts. Writing such
// a table back would write into a partition's data; the grow and the
// repair leave the disk alone instead (found by FuzzGrowGPT).
func (t gptTable) checkLayout(ss int) error {
	h := t.Header
	inUsable := func(first, last uint64) bool { return first <= h.LastUsableLBA && last >= h.FirstUsableLBA }
	if es := t.entriesSectors(ss); inUsable(h.EntriesLBA, h.EntriesLBA+es-1) || inUsable(h.MyLBA, h.MyLBA) {
		return fmt.Errorf("GPT at LBA %d: its header or entry array (LBA %d-%d) lies in the usable LBAs %d-%d", h.MyLBA, h.EntriesLBA, h.EntriesLBA+es-1, h.FirstUsableLBA, h.LastUsableLBA)
	}
	for i := 0; i < int(h.NumEntries); i++ {
		if e := t.entry(i); t.used(i) && (e.FirstLBA > e.LastLBA || e.FirstLBA < h.FirstUsableLBA || e.LastLBA > h.LastUsableLBA) {
			return fmt.Errorf("GPT at LBA %d: partition %d (LBA %d-%d) is not within the usable LBAs %d-%d", h.MyLBA, i+1, e.FirstLBA, e.LastLBA, h.FirstUsableLBA, h.LastUsableLBA)
		}
	}
	return nil
}

// diskGPT is what a disk holds: the primary table and the backup, each
// with why it is not valid.
type diskGPT struct {
	Primary, Backup       gptTable
	PrimaryErr, BackupErr error
	BackupLBA             uint64 // where the backup was looked for
}

// readDiskGPT reads both tables: the backup at the primary's alternate LBA,
// or at the last LBA when the primary is not valid (a primary cut while
// being rewritten says nothing trustworthy about where the backup is, and
// the backup is written at the last LBA before the primary is touched).
// A valid primary whose backup is not valid gets a new backup anyway.
func readDiskGPT(r io.ReaderAt, sectors uint64, ss int) diskGPT {
	var d diskGPT
	if sectors < 3 {
		d.PrimaryErr, d.BackupErr = errNoGPT, errNoGPT
		return d
	}
	d.Primary, d.PrimaryErr = readGPT(r, 1, sectors, ss)
	d.BackupLBA = sectors - 1
	if d.PrimaryErr == nil && d.Primary.Header.AlternateLBA < sectors {
		d.BackupLBA = d.Primary.Header.AlternateLBA
	}
	d.Backup, d.BackupErr = readGPT(r, d.BackupLBA, sectors, ss)
	return d
}

// primaryFrom is the primary table rebuilt from a valid backup (entries
// right after the primary header, as every partitioning tool writes them).
func primaryFrom(backup gptTable) gptTable {
	p := backup.clone()
	p.Header.MyLBA = 1
	p.Header.AlternateLBA = backup.Header.MyLBA
	p.Header.EntriesLBA = 2
	return p
}

// backupOf is the backup table that goes with primary: the entry array in
// the sectors just before the last LBA, the header in the last LBA.
func backupOf(primary gptTable, ss int) gptTable {
	b := primary.clone()
	b.Header.MyLBA = primary.Header.AlternateLBA
	b.Header.AlternateLBA = 1
	b.Header.EntriesLBA = b.Header.MyLBA - primary.entriesSectors(ss)
	return b
}

// lastPartition is the index of the used entry that ends last on the disk.
func lastPartition(t gptTable) int {
	last := -1
	for i := 0; i < int(t.Header.NumEntries); i++ {
		if t.used(i) && (last < 0 || t.entry(i).LastLBA > t.entry(last).LastLBA) {
			last = i
		}
	}
	return last
}

// grownGPT is the primary table for a disk of sectors: the backup at the
// last LBA, the usable range up to just before the backup's entries, and,
// when grow is set and entry part is the last partition, that partition
// ending at the last 1 MiB boundary of the usable range. A partition is
// never shrunk. why says what changes ("" = nothing).
func grownGPT(t gptTable, sectors uint64, ss int, part int, grow bool) (g gptTable, why string, err error) {
	g = t.clone()
	h := &g.Header
	es := t.entriesSectors(ss)
	if sectors < 2+2*es+2 {
		return t, "", fmt.Errorf("disk of %d sectors is too small for a GPT", sectors)
	}
	last := sectors - 1
	lastUsable := last - es - 1
	if t.Header.AlternateLBA > last || t.Header.LastUsableLBA > lastUsable {
		return t, "", fmt.Errorf("the GPT describes a disk of %d sectors, but the disk has %d: the image was written to a smaller disk; not touching it", t.Header.AlternateLBA+1, sectors)
	}
	var changes []string
	if h.AlternateLBA != last {
		changes = append(changes, fmt.Sprintf("backup GPT from LBA %d to %d", h.AlternateLBA, last))
		h.AlternateLBA = last
	}
	if h.LastUsableLBA != lastUsable {
		h.LastUsableLBA = lastUsable
	}
	if grow && part >= 0 && part < int(h.NumEntries) && t.used(part) && lastPartition(t) == part {
		e := t.entry(part)
		perAlign := uint64(gptAlign / ss)
		// On a disk of less than one alignment unit there is no boundary
		// to grow to (found by FuzzGrowGPT: the end wrapped to 2^64-1).
		aligned := (lastUsable + 1) / perAlign * perAlign
		if end := aligned - 1; aligned > 0 && end > e.LastLBA && end >= e.FirstLBA {
			changes = append(changes, fmt.Sprintf("partition %d end from LBA %d to %d", part+1, e.LastLBA, end))
			g.setLast(part, end)
		}
	}
	if len(changes) == 0 && bytes.Equal(g.encodeHeader(ss), t.encodeHeader(ss)) {
		return t, "", nil
	}
	if len(changes) == 0 {
		changes = append(changes, "usable range")
	}
	return g, joinChanges(changes), nil
}

func joinChanges(c []string) string {
	var b bytes.Buffer
	for i, s := range c {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// gptWrite is one write of the table: bytes at an offset.
type gptWrite struct {
	Off  int64
	Data []byte
	What string
}

// tableWrites are the writes of one copy of the table: its entry array,
// then its header (a header is only valid with its entries under it).
func tableWrites(t gptTable, ss int, what string) []gptWrite {
	return []gptWrite{
		{Off: int64(t.Header.EntriesLBA) * int64(ss), Data: t.Entries, What: what + " GPT entries"},
		{Off: int64(t.Header.MyLBA) * int64(ss), Data: t.encodeHeader(ss), What: what + " GPT header"},
	}
}

// pmbrSize is the protective MBR's partition size for a disk of sectors
// (UEFI 5.2.3: the disk's size minus one, or 0xFFFFFFFF if that is too
// large); ok is false when sector 0 holds no protective MBR.
func pmbrSize(mbr []byte, sectors uint64) (cur, want uint32, ok bool) {
	if len(mbr) < 512 || mbr[510] != 0x55 || mbr[511] != 0xAA || mbr[446+4] != 0xEE {
		return 0, 0, false
	}
	want = 0xFFFFFFFF
	if sectors-1 < 0xFFFFFFFF {
		want = uint32(sectors - 1)
	}
	return binary.LittleEndian.Uint32(mbr[446+12:]), want, true
}
