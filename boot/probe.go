package boot

import (
	"bytes"
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

// blankProbeBytes is how much of a partition must be erased for it to count
// as blank. Every filesystem we might meet keeps a superblock or a table in
// its first MiB, so a corrupted filesystem still has non-erased bytes there
// and is never taken for a blank partition (and formatted over).
const blankProbeBytes = 1 << 20

// Probe tells what a partition of the given size holds. Blank means the
// first MiB (or the whole partition, if smaller) is all 0x00 (a fresh image
// or eMMC after discard) or all 0xFF (erased NOR/NAND). Exported because
// the host's power-cut campaign must judge crash states exactly as the init
// will.
func Probe(r io.ReaderAt, size int64) (Content, error) {
	// The superblocks first: a filesystem is known from its first 4 KiB,
	// and every boot probes the data partition (4 KiB instead of 1 MiB
	// is ~10 ms of the hand-over under QEMU TCG). The whole MiB only for
	// what is not one.
	if c, ok := probeHead(r, size); ok {
		return c, nil
	}
	n := int64(blankProbeBytes)
	if size < n {
		n = size
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return ContentUnknown, fmt.Errorf("read first %d bytes: %w", n, err)
	}
	if c, ok := superblockContent(buf); ok {
		return c, nil // the head's read failed, the whole one did not
	}
	// No superblock where it belongs, but a backup one further on: an ext4
	// whose start was damaged or wiped. Never blank, never "unknown".
	if _, ok := findExt4Backup(r, size); ok {
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

// probeHead tells a squashfs or an ext4 from the first 4 KiB alone; ok is
// false when that does not settle it (or the read failed: Probe's whole
// read then says why).
func probeHead(r io.ReaderAt, size int64) (Content, bool) {
	n := min(size, 4096)
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return ContentUnknown, false
	}
	return superblockContent(buf)
}

// superblockContent tells a squashfs or an ext4 by the superblock at the
// start of buf.
func superblockContent(buf []byte) (Content, bool) {
	switch {
	case len(buf) >= 4 && string(buf[:4]) == "hsqs":
		return ContentSquashfs, true
	case len(buf) > ext4SuperblockOffset:
		if sb, err := parseExt4Superblock(buf[ext4SuperblockOffset:]); err == nil && sb.valid() {
			return ContentExt4, true
		}
	}
	return ContentUnknown, false
}
