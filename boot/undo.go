package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// An e2fsck undo file (e2fsck -z FILE, e2fsprogs >= 1.43; format
// "E2UNDO02", lib/ext2fs/undo_io.c) holds the bytes every block had before
// e2fsck first wrote it. The init runs each automatic e2fsck with one in
// RAM, and when the repair does not end in a mounted filesystem it writes
// those bytes back itself (Debian's e2fsck-static carries no e2undo), so
// on_corrupt = "keep" leaves the partition as it found it.
//
// The file is cut into blocks of the header's block_size: block 0 the
// header, then (at super_offset) a copy of the filesystem's superblock,
// then from key_offset a key block (magic 0xCADECADE, its crc32c, then
// keys: fs block, crc32c of the saved bytes, their size) followed by the
// saved bytes of its keys, each rounded up to whole blocks; then the next
// key block, and so on. Every checksum is crc32c with seed ~0 and no final
// inversion, as ext2fs_crc32c_le computes it.

const (
	undoMagic      = "E2UNDO02"
	undoKeyMagic   = 0xCADECADE
	undoHeaderSize = 512
	undoKeySize    = 16
	undoMinBlock   = 1024
	undoMaxBlock   = 1 << 20
	undoFinished   = 0x1
	undoCompatOff  = 0x1 // E2UNDO_FEATURE_COMPAT_FS_OFFSET
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// e2crc32c is ext2fs_crc32c_le(seed, p): crc32c without Go's inversions.
func e2crc32c(seed uint32, p []byte) uint32 { return ^crc32.Update(^seed, castagnoli, p) }

// undoExtent is one key: size bytes that belong at offset off of the
// device, saved at dataOff in the undo file.
type undoExtent struct {
	off     int64
	size    int64
	dataOff int64
}

// undoLog is a parsed, verified undo file.
type undoLog struct {
	r        io.ReaderAt
	extents  []undoExtent
	finished bool // e2fsck closed the file (it may have been killed)
}

// bytes is the number of bytes the rollback writes.
func (u *undoLog) bytes() int64 {
	var n int64
	for _, e := range u.extents {
		n += e.size
	}
	return n
}

// parseUndo reads and verifies an undo file of size bytes: the header's
// and every key block's checksum, and the checksum of every saved block,
// before anything is written back. An empty file (e2fsck wrote nothing)
// is a log with no extents.
func parseUndo(r io.ReaderAt, size int64) (*undoLog, error) {
	u := &undoLog{r: r}
	if size == 0 {
		return u, nil
	}
	hdr := make([]byte, undoHeaderSize)
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("undo header: %w", err)
	}
	if bytes.Equal(hdr, make([]byte, undoHeaderSize)) {
		// e2fsck had made room for its header and not yet saved a block:
		// it had not written to the device either.
		return u, nil
	}
	if string(hdr[:8]) != undoMagic {
		return nil, fmt.Errorf("undo header: magic %q, want %q", hdr[:8], undoMagic)
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(hdr[undoHeaderSize-4:]), e2crc32c(^uint32(0), hdr[:undoHeaderSize-4]); got != want {
		return nil, fmt.Errorf("undo header: checksum %#x, want %#x", got, want)
	}
	numKeys := le.Uint64(hdr[8:])
	keyOffset := le.Uint64(hdr[24:])
	bs := int64(le.Uint32(hdr[32:]))
	fsbs := int64(le.Uint32(hdr[36:]))
	state := le.Uint32(hdr[44:])
	compat, incompat, rocompat := le.Uint32(hdr[48:]), le.Uint32(hdr[52:]), le.Uint32(hdr[56:])
	var fsOffset int64
	if compat&undoCompatOff != 0 {
		fsOffset = int64(le.Uint64(hdr[64:]))
	}
	u.finished = state&undoFinished != 0
	if numKeys == 0 {
		// e2fsck opened the device and wrote nothing to it (one that could
		// not read the filesystem leaves such a file: block size 0).
		return u, nil
	}
	switch {
	case bs < undoMinBlock || bs > undoMaxBlock || fsbs < undoMinBlock || fsbs > undoMaxBlock:
		return nil, fmt.Errorf("undo header: block sizes %d and %d out of range", bs, fsbs)
	case incompat != 0 || rocompat != 0:
		return nil, fmt.Errorf("undo header: unknown features %#x/%#x", incompat, rocompat)
	case fsOffset < 0:
		return nil, fmt.Errorf("undo header: filesystem offset %d", fsOffset)
	}
	perBlock := uint64(bs/undoKeySize - 1)
	kb := make([]byte, bs)
	blk := int64(keyOffset)
	for done := uint64(0); done < numKeys; {
		if blk < 0 || blk*bs+bs > size {
			return nil, fmt.Errorf("undo key block %d: past the end of the file (%d bytes)", blk, size)
		}
		if _, err := r.ReadAt(kb, blk*bs); err != nil {
			return nil, fmt.Errorf("undo key block %d: %w", blk, err)
		}
		if m := le.Uint32(kb); m != undoKeyMagic {
			return nil, fmt.Errorf("undo key block %d: magic %#x", blk, m)
		}
		want := le.Uint32(kb[4:])
		le.PutUint32(kb[4:], 0)
		if got := e2crc32c(^uint32(0), kb); got != want {
			return nil, fmt.Errorf("undo key block %d: checksum %#x, want %#x", blk, got, want)
		}
		blk++
		n := min(numKeys-done, perBlock)
		for i := uint64(0); i < n; i++ {
			k := kb[undoKeySize*(i+1):]
			fsblk, crc, sz := le.Uint64(k), le.Uint32(k[8:]), int64(le.Uint32(k[12:]))
			if sz <= 0 || sz > 512*bs || fsblk > (1<<62)/uint64(fsbs) {
				return nil, fmt.Errorf("undo key %d: block %d, %d bytes: out of range", done+i, fsblk, sz)
			}
			e := undoExtent{off: int64(fsblk)*fsbs + fsOffset, size: sz, dataOff: blk * bs}
			if e.dataOff+sz > size {
				return nil, fmt.Errorf("undo key %d: its %d bytes are past the end of the file", done+i, sz)
			}
			data := make([]byte, sz)
			if _, err := r.ReadAt(data, e.dataOff); err != nil {
				return nil, fmt.Errorf("undo key %d: %w", done+i, err)
			}
			if got := e2crc32c(^uint32(0), data); got != crc {
				return nil, fmt.Errorf("undo key %d (device block %d): checksum %#x, want %#x", done+i, fsblk, got, crc)
			}
			u.extents = append(u.extents, e)
			blk += (sz + bs - 1) / bs
		}
		done += n
	}
	return u, nil
}

// rollback writes every saved extent back to dev and syncs it. It is
// idempotent: after a power cut in the middle, each extent holds either the
// repair's bytes or the original ones, and the same log written again
// completes it.
func (u *undoLog) rollback(dev syncWriterAt) error {
	buf := []byte{}
	for i, e := range u.extents {
		if int64(cap(buf)) < e.size {
			buf = make([]byte, e.size)
		}
		buf = buf[:e.size]
		if _, err := u.r.ReadAt(buf, e.dataOff); err != nil {
			return fmt.Errorf("read undo extent %d: %w", i, err)
		}
		if _, err := dev.WriteAt(buf, e.off); err != nil {
			return fmt.Errorf("write back %d bytes at %d: %w", e.size, e.off, err)
		}
	}
	return dev.Sync()
}

// sameBytes reports whether dev holds the log's saved bytes already (a
// rollback that finished, or a repair that changed nothing).
func (u *undoLog) sameBytes(dev io.ReaderAt) (bool, error) {
	for _, e := range u.extents {
		a, b := make([]byte, e.size), make([]byte, e.size)
		if _, err := u.r.ReadAt(a, e.dataOff); err != nil {
			return false, err
		}
		if _, err := dev.ReadAt(b, e.off); err != nil {
			return false, err
		}
		if !bytes.Equal(a, b) {
			return false, nil
		}
	}
	return true, nil
}
