package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Content is what a partition was found to hold.
type Content string

const (
	ContentBlank    Content = "blank"    // erased: never formatted
	ContentExt4     Content = "ext4"     // an ext2/3/4 superblock
	ContentSquashfs Content = "squashfs" // a squashfs superblock
	ContentUnknown  Content = "unknown"  // data of a kind we do not know: never formatted silently
	// ContentExt4Damaged is an ext4 whose primary superblock is gone but a
	// backup superblock remains: a filesystem to repair, never "blank".
	ContentExt4Damaged Content = "ext4 (primary superblock damaged)"
)

// Ext4Backup is where a backup superblock of an ext4 was found: the
// arguments of e2fsck -b BLOCK -B BLOCKSIZE.
type Ext4Backup struct {
	Block, BlockSize int64
}

// FindExt4Backup looks for the backup superblock of block group 1 for each
// block size mke2fs and go-diskfs use (8*blocksize blocks per group; with
// 1 KiB blocks the first data block is 1).
func FindExt4Backup(r io.ReaderAt, size int64) (Ext4Backup, bool) {
	for _, bs := range []int64{4096, 1024, 2048} {
		block := 8 * bs
		if bs == 1024 {
			block++
		}
		off := block * bs
		if off+0x3a > size {
			continue
		}
		magic := make([]byte, 2)
		if _, err := r.ReadAt(magic, off+0x38); err == nil && binary.LittleEndian.Uint16(magic) == 0xEF53 {
			return Ext4Backup{Block: block, BlockSize: bs}, true
		}
	}
	return Ext4Backup{}, false
}

// blankProbeBytes is how much of a partition must be erased for it to count
// as blank. Every filesystem we might meet keeps a superblock or a table in
// its first MiB, so a corrupted filesystem still has non-erased bytes there
// and is never taken for a blank partition (and formatted over).
const blankProbeBytes = 1 << 20

// Probe tells what a partition of the given size holds. Blank means the
// first MiB (or the whole partition, if smaller) is all 0x00 (a fresh image
// or eMMC after discard) or all 0xFF (erased NOR/NAND).
func Probe(r io.ReaderAt, size int64) (Content, error) {
	n := int64(blankProbeBytes)
	if size < n {
		n = size
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return ContentUnknown, fmt.Errorf("read first %d bytes: %w", n, err)
	}
	switch {
	case len(buf) >= 4 && string(buf[:4]) == "hsqs":
		return ContentSquashfs, nil
	case len(buf) >= 1082 && binary.LittleEndian.Uint16(buf[1080:1082]) == 0xEF53:
		return ContentExt4, nil
	}
	// No superblock where it belongs, but a backup one further on: an ext4
	// whose start was damaged or wiped. Never blank, never "unknown".
	if _, ok := FindExt4Backup(r, size); ok {
		return ContentExt4Damaged, nil
	}
	if allBytes(buf, 0x00) || allBytes(buf, 0xFF) {
		return ContentBlank, nil
	}
	return ContentUnknown, nil
}

func allBytes(b []byte, v byte) bool {
	if len(b) == 0 {
		return true
	}
	return b[0] == v && bytes.Equal(b[1:], b[:len(b)-1])
}
