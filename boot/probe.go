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
)

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
	case allBytes(buf, 0x00), allBytes(buf, 0xFF):
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
