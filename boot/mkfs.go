package boot

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"time"
)

// mkfsExt4 writes, through w, an ext4 filesystem of size bytes labelled
// label, as `mke2fs -t ext4 -O ^resize_inode,^metadata_csum,uninit_bg -E
// lazy_itable_init=1` would lay it out (uninit_bg's crc16 group descriptor
// checksums give the lazy inode tables with one checksum to compute,
// where metadata_csum would add them on inodes, directories and bitmaps): features has_journal ext_attr
// dir_index filetype extent 64bit flex_bg sparse_super large_file
// huge_file uninit_bg dir_nlink extra_isize; 256-byte inodes; 16 groups to
// a flex group. Only what a mounted filesystem reads is written: the
// superblocks and group descriptors, the bitmaps, the first inode table
// block(s) of group 0 (inodes 1 to 11), the root directory and lost+found,
// and the journal (zeroed through zero, then its superblock). Every other
// group is flagged INODE_UNINIT with no ITABLE_ZEROED, so neither the
// kernel nor e2fsck reads its inode table before the kernel's lazy init
// thread (mount option init_itable, the default) has zeroed it. So the cost
// is a few writes per flex group and backup superblock, not a pass over
// the inode tables.
//
// zero(off, n) must make n bytes at off read back as zeros.
func mkfsExt4(w io.WriterAt, zero func(off, n int64) error, size int64, label string, now time.Time) error {
	g, err := ext4Geometry(size)
	if err != nil {
		return err
	}
	var uuid, seed [16]byte
	fillRandom(uuid[:])
	fillRandom(seed[:])
	uuid[6] = uuid[6]&0x0f | 0x40 // a version 4 (random) UUID
	uuid[8] = uuid[8]&0x3f | 0x80
	return g.write(w, zero, label, uuid, seed, uint32(now.Unix()))
}

// fillRandom fills p from math/rand/v2, which the Go runtime seeds from
// the kernel at exec (AT_RANDOM) without waiting: crypto/rand blocks until
// the kernel's random pool is initialised, which at first boot under
// emulation is a second or more after the init starts. The UUID and the
// directory hash seed need to differ between devices, not to be secret.
func fillRandom(p []byte) {
	for i := range p {
		p[i] = byte(rand.Uint32())
	}
}

const (
	mkfsInodeSize  = 256
	mkfsFlexLog    = 4 // 16 groups to a flex group
	mkfsDescSize   = 64
	mkfsFirstIno   = 11
	mkfsRootIno    = 2
	mkfsJournalIno = 8
	mkfsLpfIno     = 11
	mkfsMaxExtent  = 32768 // longest initialized extent
)

// ext4Layout is where everything of the filesystem lies.
type ext4Layout struct {
	bs, blocks, fdb, bpg, ipg, itb uint64
	groups, gdtBlocks              uint64
	bb, ib, it                     []uint64    // per group: block bitmap, inode bitmap, inode table
	bbm                            []byte      // every group's block bitmap, group after group
	root                           uint64      // root directory block
	lpf, lpfLen                    uint64      // lost+found's blocks
	journal                        [][2]uint64 // extents: start, length
	jblocks                        uint64
}

// ext4Geometry plans the filesystem: block size as sectorsPerBlock
// chooses, one inode per 8 KiB (1 KiB blocks) or 16 KiB (4 KiB blocks),
// mke2fs's journal size (at most 32768 blocks).
func ext4Geometry(size int64) (*ext4Layout, error) {
	g := &ext4Layout{bs: uint64(sectorsPerBlock(size)) * 512}
	ratio := uint64(16384)
	if g.bs == 1024 {
		g.fdb, ratio = 1, 8192
	}
	g.blocks = uint64(size) / g.bs
	g.bpg = 8 * g.bs
	g.ipg = g.bpg * g.bs / ratio
	g.itb = g.ipg * mkfsInodeSize / g.bs
	if g.blocks < 2048 {
		return nil, fmt.Errorf("mkfs: %d bytes is too small for an ext4 with a journal", size)
	}
	g.groups = (g.blocks - g.fdb + g.bpg - 1) / g.bpg
	// A last group too small for its own metadata and some data is left
	// out, as mke2fs does.
	if last := g.blocks - g.fdb - (g.groups-1)*g.bpg; g.groups > 1 && last < 3+g.itb+g.gdt()+50 {
		g.groups--
		g.blocks = g.fdb + g.groups*g.bpg
	}
	g.gdtBlocks = g.gdt()
	g.jblocks = journalBlocks(g.blocks)

	g.bbm = make([]byte, g.groups*g.bs)
	g.bb, g.ib, g.it = make([]uint64, g.groups), make([]uint64, g.groups), make([]uint64, g.groups)
	for gr := uint64(0); gr < g.groups; gr++ {
		if hasSuperBackup(gr) {
			g.mark(g.groupStart(gr), 1+g.gdtBlocks)
		}
	}
	flex := uint64(1) << mkfsFlexLog
	for f0 := uint64(0); f0 < g.groups; f0 += flex {
		n := min(flex, g.groups-f0)
		base := g.groupStart(f0)
		if hasSuperBackup(f0) {
			base += 1 + g.gdtBlocks
		}
		need := n * (2 + g.itb)
		if base+need > g.groupEnd(f0) {
			return nil, fmt.Errorf("mkfs: the metadata of groups %d-%d does not fit in group %d", f0, f0+n-1, f0)
		}
		for i := uint64(0); i < n; i++ {
			g.bb[f0+i] = base + i
			g.ib[f0+i] = base + n + i
			g.it[f0+i] = base + 2*n + i*g.itb
		}
		g.mark(base, need)
	}
	g.lpfLen = min(16384/g.bs, 12)
	var err error
	var ext [][2]uint64
	if ext, err = g.alloc(1); err != nil {
		return nil, err
	}
	g.root = ext[0][0]
	if ext, err = g.alloc(g.lpfLen); err != nil || len(ext) != 1 {
		return nil, fmt.Errorf("mkfs: no room for lost+found")
	}
	g.lpf = ext[0][0]
	if g.journal, err = g.alloc(g.jblocks); err != nil {
		return nil, err
	}
	if len(g.journal) > 4 {
		return nil, fmt.Errorf("mkfs: the journal needs %d extents, an inode holds 4", len(g.journal))
	}
	return g, nil
}

func (g *ext4Layout) gdt() uint64 { return (g.groups*mkfsDescSize + g.bs - 1) / g.bs }

func (g *ext4Layout) groupStart(gr uint64) uint64 { return g.fdb + gr*g.bpg }

// groupEnd is one past the last block of group gr.
func (g *ext4Layout) groupEnd(gr uint64) uint64 { return min(g.groupStart(gr+1), g.blocks) }

func (g *ext4Layout) bit(b uint64) uint64 { return b - g.fdb }

func (g *ext4Layout) mark(b, n uint64) {
	for i := g.bit(b); i < g.bit(b+n); i++ {
		g.bbm[i/8] |= 1 << (i % 8)
	}
}

func (g *ext4Layout) used(b uint64) bool { i := g.bit(b); return g.bbm[i/8]&(1<<(i%8)) != 0 }

// alloc takes n blocks from the first free ones, as extents of at most
// mkfsMaxExtent blocks, and marks them used.
func (g *ext4Layout) alloc(n uint64) ([][2]uint64, error) {
	var out [][2]uint64
	for b := g.fdb; n > 0 && b < g.blocks; b++ {
		if g.used(b) {
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k][0]+out[k][1] == b && out[k][1] < mkfsMaxExtent {
			out[k][1]++
		} else {
			out = append(out, [2]uint64{b, 1})
		}
		n--
	}
	if n > 0 {
		return nil, fmt.Errorf("mkfs: out of space")
	}
	for _, e := range out {
		g.mark(e[0], e[1])
	}
	return out, nil
}

// journalBlocks is mke2fs's default journal size (ext2fs_default_journal_size),
// capped at 32768 blocks so that its extents fit in the inode.
func journalBlocks(blocks uint64) uint64 {
	switch {
	case blocks < 32768:
		return 1024
	case blocks < 256*1024:
		return 4096
	case blocks < 512*1024:
		return 8192
	case blocks < 4096*1024:
		return 16384
	}
	return 32768
}

// hasSuperBackup: sparse_super keeps a superblock copy in groups 0, 1 and
// the powers of 3, 5 and 7.
func hasSuperBackup(gr uint64) bool {
	if gr <= 1 {
		return true
	}
	if gr%2 == 0 {
		return false
	}
	for _, p := range []uint64{3, 5, 7} {
		n := gr
		for n%p == 0 {
			n /= p
		}
		if n == 1 {
			return true
		}
	}
	return false
}

var le = binary.LittleEndian

func (g *ext4Layout) write(w io.WriterAt, zero func(off, n int64) error, label string, uuid, seed [16]byte, now uint32) error {
	bs := int64(g.bs)
	wr := func(what string, p []byte, block uint64) error {
		if _, err := w.WriteAt(p, int64(block)*bs); err != nil {
			return fmt.Errorf("mkfs: write %s at block %d: %w", what, block, err)
		}
		return nil
	}

	// The journal: zeros, then its superblock (jbd2, big-endian).
	for _, e := range g.journal {
		if err := zero(int64(e[0])*bs, int64(e[1])*bs); err != nil {
			return fmt.Errorf("mkfs: zero the journal at block %d: %w", e[0], err)
		}
	}
	jsb := make([]byte, g.bs)
	be := binary.BigEndian
	be.PutUint32(jsb[0:], 0xC03B3998) // JBD2_MAGIC_NUMBER
	be.PutUint32(jsb[4:], 4)          // JBD2_SUPERBLOCK_V2
	be.PutUint32(jsb[0x0C:], uint32(g.bs))
	be.PutUint32(jsb[0x10:], uint32(g.jblocks))
	be.PutUint32(jsb[0x14:], 1) // s_first
	be.PutUint32(jsb[0x18:], 1) // s_sequence
	copy(jsb[0x30:], uuid[:])
	be.PutUint32(jsb[0x40:], 1) // s_nr_users
	if err := wr("journal superblock", jsb, g.journal[0][0]); err != nil {
		return err
	}

	// Inodes 1 to 11 (the reserved ones zero), in group 0's inode table.
	it := make([]byte, (mkfsFirstIno*mkfsInodeSize+g.bs-1)/g.bs*g.bs)
	dirInode := func(ino uint64, mode uint16, links uint16, start, n uint64) {
		g.inode(it[(ino-1)*mkfsInodeSize:ino*mkfsInodeSize], mode, links, n*g.bs, [][2]uint64{{start, n}}, now)
	}
	dirInode(mkfsRootIno, 0o40755, 3, g.root, 1)
	dirInode(mkfsLpfIno, 0o40700, 2, g.lpf, g.lpfLen)
	jino := it[(mkfsJournalIno-1)*mkfsInodeSize : mkfsJournalIno*mkfsInodeSize]
	g.inode(jino, 0o100600, 1, g.jblocks*g.bs, g.journal, now)
	if err := wr("inode table", it, g.it[0]); err != nil {
		return err
	}

	// The directories.
	root := make([]byte, g.bs)
	off := dirent(root, 0, mkfsRootIno, 12, ".")
	off = dirent(root, off, mkfsRootIno, 12, "..")
	dirent(root, off, mkfsLpfIno, int(g.bs)-off, "lost+found")
	if err := wr("root directory", root, g.root); err != nil {
		return err
	}
	lpf := make([]byte, g.lpfLen*g.bs)
	off = dirent(lpf, 0, mkfsLpfIno, 12, ".")
	dirent(lpf, off, mkfsRootIno, int(g.bs)-off, "..")
	for b := g.bs; b < uint64(len(lpf)); b += g.bs {
		le.PutUint16(lpf[b+4:], uint16(g.bs)) // an empty block: inode 0, rec_len the block
	}
	if err := wr("lost+found", lpf, g.lpf); err != nil {
		return err
	}

	// Group descriptors and bitmaps.
	last := g.groups - 1
	if pad := g.groupStart(g.groups) - g.blocks; pad > 0 { // past the end of the last group
		for i := g.bpg - pad; i < g.bpg; i++ {
			g.bbm[last*g.bs+i/8] |= 1 << (i % 8)
		}
	}
	gdt := make([]byte, g.gdtBlocks*g.bs)
	var freeBlocks, freeInodes uint64
	for gr := uint64(0); gr < g.groups; gr++ {
		bm := g.bbm[gr*g.bs : (gr+1)*g.bs]
		usedBlocks := uint64(0)
		for i := 0; i < len(bm); i += 8 {
			usedBlocks += uint64(bits.OnesCount64(le.Uint64(bm[i:])))
		}
		free := g.bpg - usedBlocks
		flags := uint16(0x1) // INODE_UNINIT
		inodesFree, dirs, unused := g.ipg, uint64(0), g.ipg
		if gr == 0 {
			flags = 0
			inodesFree, dirs, unused = g.ipg-mkfsFirstIno, 2, g.ipg-mkfsFirstIno
		}
		var backup uint64
		if hasSuperBackup(gr) {
			backup = 1 + g.gdtBlocks
		}
		if gr != last && usedBlocks == backup {
			flags |= 0x2 // BLOCK_UNINIT: nothing in it but its superblock backup
		}
		freeBlocks += free
		freeInodes += inodesFree
		d := gdt[gr*mkfsDescSize : (gr+1)*mkfsDescSize]
		le.PutUint32(d[0x00:], uint32(g.bb[gr]))
		le.PutUint32(d[0x04:], uint32(g.ib[gr]))
		le.PutUint32(d[0x08:], uint32(g.it[gr]))
		le.PutUint16(d[0x0C:], uint16(free))
		le.PutUint16(d[0x0E:], uint16(inodesFree))
		le.PutUint16(d[0x10:], uint16(dirs))
		le.PutUint16(d[0x12:], flags)
		le.PutUint16(d[0x1C:], uint16(unused))
		le.PutUint32(d[0x20:], uint32(g.bb[gr]>>32))
		le.PutUint32(d[0x24:], uint32(g.ib[gr]>>32))
		le.PutUint32(d[0x28:], uint32(g.it[gr]>>32))
		le.PutUint16(d[0x2C:], uint16(free>>16))
		le.PutUint16(d[0x2E:], uint16(inodesFree>>16))
		le.PutUint16(d[0x32:], uint16(unused>>16))
		le.PutUint16(d[0x1E:], groupDescCsum(uuid, gr, d))
	}
	// Inode bitmaps: the bits past ipg set; in group 0 inodes 1 to 11 used.
	flex := uint64(1) << mkfsFlexLog
	ibm := make([]byte, min(flex, g.groups)*g.bs)
	for gr := uint64(0); gr < min(flex, g.groups); gr++ {
		for i := g.ipg; i < 8*g.bs; i++ {
			ibm[gr*g.bs+i/8] |= 1 << (i % 8)
		}
	}
	ibm0 := append([]byte(nil), ibm...)
	for i := 0; i < mkfsFirstIno; i++ {
		ibm0[i/8] |= 1 << (i % 8)
	}
	for f0 := uint64(0); f0 < g.groups; f0 += flex {
		n := min(flex, g.groups-f0)
		if err := wr("block bitmaps", g.bbm[f0*g.bs:(f0+n)*g.bs], g.bb[f0]); err != nil {
			return err
		}
		m := ibm
		if f0 == 0 {
			m = ibm0
		}
		if err := wr("inode bitmaps", m[:n*g.bs], g.ib[f0]); err != nil {
			return err
		}
	}

	// The superblock, its backups last, then the primary.
	sb := make([]byte, 1024)
	le.PutUint32(sb[0x00:], uint32(g.groups*g.ipg))
	le.PutUint32(sb[0x04:], uint32(g.blocks))
	le.PutUint32(sb[0x0C:], uint32(freeBlocks))
	le.PutUint32(sb[0x10:], uint32(freeInodes))
	le.PutUint32(sb[0x14:], uint32(g.fdb))
	le.PutUint32(sb[0x18:], uint32(bits.TrailingZeros64(g.bs)-10))
	le.PutUint32(sb[0x1C:], uint32(bits.TrailingZeros64(g.bs)-10))
	le.PutUint32(sb[0x20:], uint32(g.bpg))
	le.PutUint32(sb[0x24:], uint32(g.bpg))
	le.PutUint32(sb[0x28:], uint32(g.ipg))
	le.PutUint32(sb[0x30:], now)    // s_wtime
	le.PutUint16(sb[0x36:], 0xFFFF) // s_max_mnt_count: -1, no check by count
	le.PutUint16(sb[0x38:], ext4Magic)
	le.PutUint16(sb[0x3A:], 1) // s_state: clean
	le.PutUint16(sb[0x3C:], 1) // s_errors: continue
	le.PutUint32(sb[0x40:], now)
	le.PutUint32(sb[0x4C:], 1) // s_rev_level: dynamic
	le.PutUint32(sb[0x54:], mkfsFirstIno)
	le.PutUint16(sb[0x58:], mkfsInodeSize)
	le.PutUint32(sb[0x5C:], 0x4|0x8|0x20)               // has_journal ext_attr dir_index
	le.PutUint32(sb[0x60:], 0x2|0x40|0x80|0x200)        // filetype extent 64bit flex_bg
	le.PutUint32(sb[0x64:], 0x1|0x2|0x8|0x10|0x20|0x40) // sparse_super large_file huge_file gdt_csum dir_nlink extra_isize
	copy(sb[0x68:], uuid[:])
	copy(sb[0x78:0x88], label)
	le.PutUint32(sb[0xE0:], mkfsJournalIno)
	copy(sb[0xEC:], seed[:])
	sb[0xFC] = 1 // s_def_hash_version: half_md4
	sb[0xFD] = 1 // s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
	le.PutUint16(sb[0xFE:], mkfsDescSize)
	le.PutUint32(sb[0x108:], now)
	copy(sb[0x10C:0x148], jino[0x28:0x64])           // s_jnl_blocks: the journal's i_block,
	le.PutUint32(sb[0x148:], le.Uint32(jino[0x6C:])) // its i_size_high,
	le.PutUint32(sb[0x14C:], le.Uint32(jino[0x04:])) // its i_size
	le.PutUint32(sb[0x150:], uint32(g.blocks>>32))
	le.PutUint32(sb[0x158:], uint32(freeBlocks>>32))
	le.PutUint16(sb[0x15C:], 32)  // s_min_extra_isize
	le.PutUint16(sb[0x15E:], 32)  // s_want_extra_isize
	le.PutUint32(sb[0x160:], 0x2) // s_flags: unsigned directory hash
	sb[0x174] = mkfsFlexLog

	block := make([]byte, g.bs)
	for gr := uint64(1); gr < g.groups; gr++ {
		if !hasSuperBackup(gr) {
			continue
		}
		copy(block, sb)
		le.PutUint16(block[0x5A:], uint16(gr)) // s_block_group_nr
		if err := wr("backup superblock", append(append([]byte(nil), block...), gdt...), g.groupStart(gr)); err != nil {
			return err
		}
	}
	if _, err := w.WriteAt(sb, ext4SuperblockOffset); err != nil {
		return fmt.Errorf("mkfs: write the superblock: %w", err)
	}
	return wr("group descriptors", gdt, g.fdb+1)
}

// inode fills a 256-byte inode with an extent tree held in the inode.
func (g *ext4Layout) inode(p []byte, mode, links uint16, size uint64, ext [][2]uint64, now uint32) {
	le.PutUint16(p[0x00:], mode)
	le.PutUint32(p[0x04:], uint32(size))
	le.PutUint32(p[0x08:], now)
	le.PutUint32(p[0x0C:], now)
	le.PutUint32(p[0x10:], now)
	le.PutUint16(p[0x1A:], links)
	var n uint64
	for _, e := range ext {
		n += e[1]
	}
	sectors := n * g.bs / 512
	le.PutUint32(p[0x1C:], uint32(sectors))
	le.PutUint32(p[0x20:], 0x80000) // EXT4_EXTENTS_FL
	ib := p[0x28:0x64]
	le.PutUint16(ib[0:], 0xF30A) // extent header: magic, entries, max, depth 0
	le.PutUint16(ib[2:], uint16(len(ext)))
	le.PutUint16(ib[4:], 4)
	var lblk uint32
	for i, e := range ext {
		x := ib[12+12*i:]
		le.PutUint32(x[0:], lblk)
		le.PutUint16(x[4:], uint16(e[1]))
		le.PutUint16(x[6:], uint16(e[0]>>32))
		le.PutUint32(x[8:], uint32(e[0]))
		lblk += uint32(e[1])
	}
	le.PutUint32(p[0x6C:], uint32(size>>32))
	le.PutUint16(p[0x74:], uint16(sectors>>32))
	le.PutUint16(p[0x80:], 32)  // i_extra_isize
	le.PutUint32(p[0x90:], now) // i_crtime
}

// dirent writes a directory entry (with file type: a directory) at off of
// b and returns the offset after it.
func dirent(b []byte, off int, ino uint32, recLen int, name string) int {
	le.PutUint32(b[off:], ino)
	le.PutUint16(b[off+4:], uint16(recLen))
	b[off+6] = byte(len(name))
	b[off+7] = 2 // EXT4_FT_DIR
	copy(b[off+8:], name)
	return off + recLen
}

// groupDescCsum is the uninit_bg (gdt_csum) checksum of a group
// descriptor: crc16 of the filesystem UUID, the group number and the
// descriptor without its checksum field (fs/ext4/super.c).
func groupDescCsum(uuid [16]byte, gr uint64, d []byte) uint16 {
	var n [4]byte
	le.PutUint32(n[:], uint32(gr))
	crc := crc16(0xFFFF, uuid[:])
	crc = crc16(crc, n[:])
	crc = crc16(crc, d[:0x1E])
	return crc16(crc, d[0x20:])
}

// crc16 is the kernel's crc16 (lib/crc16.c: polynomial 0x8005, bit-reversed).
func crc16(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc ^= uint16(b)
		for i := 0; i < 8; i++ {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}
