package boot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Disk is a whole disk opened for its partition table (Sys.OpenDisk).
type Disk interface {
	io.ReaderAt
	io.WriterAt
	// Size is the disk's size in bytes; SectorSize its logical sector.
	Size() int64
	SectorSize() int
	// Flush makes every write so far durable (fsync and BLKFLSBUF: the
	// disk's cache is flushed, and the next read comes from the disk).
	Flush() error
	// PartitionSize is the size in bytes the kernel gives partition number
	// (1-based) now.
	PartitionSize(number int) (int64, error)
	// ResizePartition tells the kernel partition number's new length
	// (BLKPG_RESIZE_PARTITION), without re-reading the whole table.
	ResizePartition(number int, start, length int64) error
	// Reread asks the kernel to read the partition table again (BLKRRPART);
	// only when none of the disk's partitions is in use.
	Reread() error
	Close() error
}

// gptRepairPrimary rewrites a primary GPT that is not valid from a valid
// backup. The kernel reads the backup only with "gpt" on its command line
// (block/partitions/efi.c, force_gpt), so a power cut in the middle of
// rewriting the primary would otherwise leave a disk without partitions.
// It returns whether it wrote; an error means the disk was left as it was.
func gptRepairPrimary(d Disk, g diskGPT, logf Logf) (bool, error) {
	if g.PrimaryErr == nil {
		return false, nil
	}
	if g.BackupErr != nil {
		if errors.Is(g.PrimaryErr, errNoGPT) && errors.Is(g.BackupErr, errNoGPT) {
			return false, nil // not a GPT disk
		}
		return false, fmt.Errorf("primary GPT not valid (%v) and no valid backup at LBA %d (%v)", g.PrimaryErr, g.BackupLBA, g.BackupErr)
	}
	ss := d.SectorSize()
	p := primaryFrom(g.Backup)
	if err := p.checkLayout(ss); err != nil {
		return false, fmt.Errorf("primary GPT not valid (%v), and the backup cannot be written back as a primary: %w", g.PrimaryErr, err)
	}
	logf("primary GPT not valid (%v): rewriting it from the backup at LBA %d", g.PrimaryErr, g.BackupLBA)
	if err := writeAll(d, tableWrites(p, ss, "primary")); err != nil {
		return false, err
	}
	return true, nil
}

// writeAll writes in order and then flushes.
func writeAll(d Disk, ws []gptWrite) error {
	for _, w := range ws {
		if _, err := d.WriteAt(w.Data, w.Off); err != nil {
			return fmt.Errorf("write %s at byte %d: %w", w.What, w.Off, err)
		}
	}
	if err := d.Flush(); err != nil {
		return fmt.Errorf("flush after %s: %w", ws[len(ws)-1].What, err)
	}
	return nil
}

// growResult is what growGPT did.
type growResult struct {
	Repaired bool // the primary was rewritten from the backup
	// StaleBackup: a valid backup described other partitions than the
	// primary and was rewritten from it.
	StaleBackup bool
	Changed     string // what the rewrite changed ("" = nothing)
	Resized     bool   // the kernel was told the partition's new size
	OldSize     int64  // the partition's size in bytes before
	NewSize     int64  // and after
}

// growGPT brings the disk's GPT to its size and, when grow is set, the
// data partition (number part, 1-based) to the end of the disk, doing only
// what is left from an earlier boot. The order makes a power cut harmless
// at any moment: the new backup (entries, then header in the last LBA),
// flush; then the new primary (entries, then header at LBA 1), flush. Until
// the primary is complete the old primary is read (its backup at its old
// place is intact), and a half-written primary is repaired from the new
// backup by gptRepairPrimary. The protective MBR's size comes last: nothing
// reads it but partitioning tools. Then the kernel is told the partition's
// new size.
func growGPT(d Disk, part int, grow bool, logf Logf) (growResult, error) {
	var res growResult
	ss := d.SectorSize()
	if ss < 512 || d.Size()%int64(ss) != 0 {
		return res, fmt.Errorf("sector size %d, disk size %d", ss, d.Size())
	}
	sectors := uint64(d.Size() / int64(ss))
	g := readDiskGPT(d, sectors, ss)
	repaired, err := gptRepairPrimary(d, g, logf)
	if err != nil {
		return res, err
	}
	if g.PrimaryErr != nil && !repaired {
		return res, nil // not a GPT disk
	}
	res.Repaired = repaired
	primary := g.Primary
	if repaired {
		primary = primaryFrom(g.Backup)
	}
	if err := primary.checkLayout(ss); err != nil {
		return res, fmt.Errorf("not touching the GPT: %w", err)
	}
	target, why, err := grownGPT(primary, sectors, ss, part-1, grow)
	if err != nil {
		return res, err
	}
	if why == "" && g.BackupErr != nil {
		why = fmt.Sprintf("backup GPT at LBA %d not valid (%v)", g.BackupLBA, g.BackupErr)
	}
	// A valid backup that describes other partitions than the primary
	// (another tool's edit, a stale copy) would be what a damaged primary
	// is repaired from: partitions would move, and the wrong thing be
	// mounted. The kernel reads the primary, so the backup follows it.
	if want := backupOf(target, ss); why == "" && g.BackupErr == nil &&
		(!bytes.Equal(want.Entries, g.Backup.Entries) || !bytes.Equal(want.encodeHeader(ss), g.Backup.encodeHeader(ss))) {
		why = fmt.Sprintf("backup GPT at LBA %d disagrees with the primary", g.BackupLBA)
		res.StaleBackup = true
	}
	if why != "" {
		res.Changed = why
		logf("growing the GPT to the disk's %d sectors: %s", sectors, why)
		if err := writeAll(d, tableWrites(backupOf(target, ss), ss, "backup")); err != nil {
			return res, err
		}
		if err := writeAll(d, tableWrites(target, ss, "primary")); err != nil {
			return res, err
		}
	}
	mbr := make([]byte, 512)
	if _, err := d.ReadAt(mbr, 0); err == nil {
		if cur, want, ok := pmbrSize(mbr, sectors); ok && cur != want {
			putUint32(mbr[446+12:], want)
			if err := writeAll(d, []gptWrite{{Off: 0, Data: mbr, What: "protective MBR"}}); err != nil {
				return res, err
			}
		}
	}
	if part < 1 || part > int(target.Header.NumEntries) || !target.used(part-1) {
		return res, fmt.Errorf("partition %d is not in the GPT", part)
	}
	e := target.entry(part - 1)
	start, length := int64(e.FirstLBA)*int64(ss), int64(e.LastLBA-e.FirstLBA+1)*int64(ss)
	cur, err := d.PartitionSize(part)
	if err != nil {
		return res, fmt.Errorf("size of partition %d: %w", part, err)
	}
	res.OldSize, res.NewSize = cur, cur
	if length > cur {
		if err := d.ResizePartition(part, start, length); err != nil {
			return res, fmt.Errorf("tell the kernel partition %d is %d bytes (BLKPG): %w", part, length, err)
		}
		res.Resized, res.NewSize = true, length
	}
	return res, nil
}

func putUint32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
