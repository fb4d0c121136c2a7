package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"unsafe"
)

// ext4Superblock is the start of an ext2/3/4 superblock, as far as the
// probe and the formatter read it (fs/ext4/ext4.h, struct ext4_super_block;
// little-endian, no padding). The primary superblock is at
// ext4SuperblockOffset of the filesystem; backups start block groups.
type ext4Superblock struct {
	InodesCount       uint32
	BlocksCountLo     uint32
	RBlocksCountLo    uint32
	FreeBlocksCountLo uint32
	FreeInodesCount   uint32
	FirstDataBlock    uint32
	LogBlockSize      uint32 // block size is 1024 << LogBlockSize
	LogClusterSize    uint32
	BlocksPerGroup    uint32
	ClustersPerGroup  uint32
	InodesPerGroup    uint32
	Mtime             uint32
	Wtime             uint32
	MntCount          uint16
	MaxMntCount       uint16
	Magic             uint16 // ext4Magic
	State             uint16
}

const (
	ext4SuperblockOffset = 1024
	ext4Magic            = 0xEF53
	// ext4MagicOffset is where Magic sits in a superblock (0x38).
	ext4MagicOffset = int64(unsafe.Offsetof(ext4Superblock{}.Magic))
	ext4MagicSize   = int64(unsafe.Sizeof(ext4Superblock{}.Magic))
)

// parseExt4Superblock decodes the superblock at the start of b.
func parseExt4Superblock(b []byte) (ext4Superblock, error) {
	var sb ext4Superblock
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, &sb); err != nil {
		return sb, fmt.Errorf("ext4 superblock: %w", err)
	}
	return sb, nil
}

// readExt4Superblock reads the superblock that starts at off of r.
func readExt4Superblock(r io.ReaderAt, off int64) (ext4Superblock, error) {
	b := make([]byte, binary.Size(ext4Superblock{}))
	if _, err := r.ReadAt(b, off); err != nil {
		return ext4Superblock{}, err
	}
	return parseExt4Superblock(b)
}

// valid reports whether the superblock carries the ext2/3/4 magic.
func (sb ext4Superblock) valid() bool { return sb.Magic == ext4Magic }

// ext4Backup is where a backup superblock of an ext4 was found: the
// arguments of e2fsck -b BLOCK -B BLOCKSIZE.
type ext4Backup struct {
	Block, BlockSize int64
}

// offset is the byte offset of the backup superblock.
func (b ext4Backup) offset() int64 { return b.Block * b.BlockSize }

// ext4BackupCandidates are where the backup superblock of block group 1
// lies for each block size mke2fs and mkfsExt4 use (8*blocksize blocks per
// group; with 1 KiB blocks the first data block is 1), in a partition of
// size bytes.
func ext4BackupCandidates(size int64) []ext4Backup {
	var out []ext4Backup
	for _, bs := range []int64{4096, 1024, 2048} {
		b := ext4Backup{Block: 8 * bs, BlockSize: bs}
		if bs == 1024 {
			b.Block++
		}
		if b.offset()+int64(binary.Size(ext4Superblock{})) <= size {
			out = append(out, b)
		}
	}
	return out
}

// findExt4Backup looks for the backup superblock of block group 1.
func findExt4Backup(r io.ReaderAt, size int64) (ext4Backup, bool) {
	for _, b := range ext4BackupCandidates(size) {
		if sb, err := readExt4Superblock(r, b.offset()); err == nil && sb.valid() {
			return b, true
		}
	}
	return ext4Backup{}, false
}

// ext4Size reads the block count and block size from the 1024 bytes of a
// primary superblock (s_blocks_count_hi counts only with the 64bit
// feature, INCOMPAT_64BIT).
func ext4Size(sb []byte) (blocks uint64, blockSize int64, err error) {
	if len(sb) < 0x158 {
		return 0, 0, fmt.Errorf("ext4 superblock: %d bytes", len(sb))
	}
	s, err := parseExt4Superblock(sb)
	if err != nil {
		return 0, 0, err
	}
	if !s.valid() {
		return 0, 0, fmt.Errorf("ext4 superblock: no magic")
	}
	if s.LogBlockSize > 6 {
		return 0, 0, fmt.Errorf("ext4 superblock: block size 1024<<%d", s.LogBlockSize)
	}
	blocks = uint64(s.BlocksCountLo)
	const incompat64bit = 0x80
	if binary.LittleEndian.Uint32(sb[0x60:])&incompat64bit != 0 {
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	return blocks, 1024 << s.LogBlockSize, nil
}
