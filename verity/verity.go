// Package verity is dm-verity for ovroot's read-only roots: the host
// appends a hash tree to a squashfs (package verity/tree), the kernel command line
// carries everything the device needs to check it (Info.Param), and the
// init maps the partition through the kernel's verity target (Info.Table)
// and reads it whole before it mounts it.
//
// The on-disk format is veritysetup's (cryptsetup, "format 1"): sha256,
// 4 KiB data and hash blocks, a 512-byte superblock at the start of the
// hash area, the tree after it. The tree is computed by
// github.com/containerd/go-dmverity (a Go veritysetup, whose device-mapper
// ioctls the init uses too); `veritysetup verify --hash-offset` accepts
// what tree.Format writes. This package is what the init needs (the
// parameter and the table); the tree builder lives apart so the init does
// not carry go-dmverity's builder and what it imports (uuid, net).
//
// Layout of a root partition with verity: the squashfs, zero-padded to a
// 4 KiB boundary (DataBlocks blocks), then the verity superblock in its
// own 4 KiB block, then the tree. One partition per root keeps the A/B
// slots, the bundle's root member and the upgrade exactly as they were:
// the tree is part of the bytes that are written and hashed.
package verity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// CmdlineParam is the kernel command line parameter whose value is
// Info.Param.
const CmdlineParam = "ovroot.verity"

// BlockSize is the data and hash block size.
const BlockSize = 4096

// Algorithm is the hash.
const Algorithm = "sha256"

// Info is what the device needs to check a root: the number of data
// blocks (the hash area starts right after them), the salt and the root
// hash. It travels on the kernel command line (Param), covered by the
// signed bundle manifest for updates.
type Info struct {
	DataBlocks uint64
	Salt       []byte
	RootHash   []byte
}

// HashOffset is where the hash area (the superblock) starts.
func (i Info) HashOffset() int64 { return int64(i.DataBlocks) * BlockSize }

// treeStart is where the tree starts: the block after the superblock.
func (i Info) treeStart() uint64 { return uint64(i.HashOffset()) + BlockSize }

// Param is the value of ovroot.verity=: sha256:BLOCKS:SALT:ROOTHASH.
func (i Info) Param() string {
	return fmt.Sprintf("%s:%d:%s:%s", Algorithm, i.DataBlocks, hex.EncodeToString(i.Salt), hex.EncodeToString(i.RootHash))
}

// ParseParam reads an ovroot.verity= value.
func ParseParam(s string) (Info, error) {
	var i Info
	f := strings.Split(s, ":")
	if len(f) != 4 {
		return i, fmt.Errorf("ovroot.verity=%q: want %s:BLOCKS:SALT:ROOTHASH", s, Algorithm)
	}
	if f[0] != Algorithm {
		return i, fmt.Errorf("ovroot.verity=: hash %q, want %s", f[0], Algorithm)
	}
	n, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil || n == 0 || n > 1<<40 {
		return i, fmt.Errorf("ovroot.verity=: %q is not a block count", f[1])
	}
	i.DataBlocks = n
	if i.Salt, err = hex.DecodeString(f[2]); err != nil || len(i.Salt) > 256 {
		return i, fmt.Errorf("ovroot.verity=: salt %q is not hex of at most 256 bytes", f[2])
	}
	if i.RootHash, err = hex.DecodeString(f[3]); err != nil || len(i.RootHash) != sha256.Size {
		return i, fmt.Errorf("ovroot.verity=: root hash %q is not %d bytes of hex", f[3], sha256.Size)
	}
	return i, nil
}

// Table is the device-mapper verity target's parameters for dev holding
// both the data and the hash area (Documentation/admin-guide/
// device-mapper/verity.rst). No corruption flag: a block that does not
// verify fails its read with EIO. The init reads every block before it
// mounts, so a corruption found at runtime (flash that rotted after the
// check) fails that one read and is logged by the kernel; a restart there
// would turn one bad block of a rarely read file into a boot loop on a
// device with one root.
func (i Info) Table(dev string) string {
	return fmt.Sprintf("1 %s %s %d %d %d %d %s %s %s", dev, dev, BlockSize, BlockSize, i.DataBlocks,
		i.treeStart()/BlockSize, Algorithm, hex.EncodeToString(i.RootHash), saltHex(i.Salt))
}

// Sectors is the mapped device's size in 512-byte sectors.
func (i Info) Sectors() uint64 { return i.DataBlocks * (BlockSize / 512) }

func saltHex(s []byte) string {
	if len(s) == 0 {
		return "-"
	}
	return hex.EncodeToString(s)
}

// superblockMagic starts the verity superblock.
var superblockMagic = []byte("verity\x00\x00")

// HasSuperblock reports whether r holds a verity superblock at the hash
// offset of i (a cheap check that a partition is laid out as i says).
func HasSuperblock(r io.ReaderAt, i Info) bool {
	b := make([]byte, len(superblockMagic))
	if _, err := r.ReadAt(b, i.HashOffset()); err != nil {
		return false
	}
	return bytes.Equal(b, superblockMagic)
}
