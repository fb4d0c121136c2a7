package boot

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestProbe(t *testing.T) {
	mib := 1 << 20
	withExt4Magic := make([]byte, 2*mib)
	binary.LittleEndian.PutUint16(withExt4Magic[1080:], 0xEF53)
	corruptedExt4 := make([]byte, 2*mib)
	corruptedExt4[4096+17] = 0x42 // superblock zeroed, group descriptors still there
	dataLate := make([]byte, 2*mib)
	dataLate[mib-1] = 1
	dataBeyond := make([]byte, 2*mib)
	dataBeyond[mib+5] = 1
	// An ext4 with 4 KiB blocks whose first MiB was wiped: the backup
	// superblock of group 1 (block 32768, at 128 MiB) remains.
	wipedExt4 := make([]byte, 129*mib)
	binary.LittleEndian.PutUint16(wipedExt4[32768*4096+0x38:], 0xEF53)
	wiped1k := make([]byte, 10*mib)
	binary.LittleEndian.PutUint16(wiped1k[8193*1024+0x38:], 0xEF53)
	for _, tc := range []struct {
		name string
		data []byte
		want Content
	}{
		{name: "wiped ext4 with a backup superblock is not blank", data: wipedExt4, want: ContentExt4Damaged},
		{name: "wiped 1k-block ext4", data: wiped1k, want: ContentExt4Damaged},
		{name: "ext4 with only its superblock zeroed", data: func() []byte {
			b := append([]byte{}, wiped1k...)
			b[4096+17] = 0x42 // group descriptors still there
			return b
		}(), want: ContentExt4Damaged},
		{name: "zeros", data: make([]byte, 2*mib), want: ContentBlank},
		{name: "erased flash", data: bytes.Repeat([]byte{0xFF}, 2*mib), want: ContentBlank},
		{name: "small zero partition", data: make([]byte, 4096), want: ContentBlank},
		{name: "ext4", data: withExt4Magic, want: ContentExt4},
		{name: "squashfs", data: append([]byte("hsqs"), make([]byte, 4096)...), want: ContentSquashfs},
		{name: "corrupted superblock is not blank", data: corruptedExt4, want: ContentUnknown},
		{name: "one byte set at the end of the probe window", data: dataLate, want: ContentUnknown},
		{name: "data past the first MiB only", data: dataBeyond, want: ContentBlank},
		{name: "mixed erase patterns", data: append(make([]byte, 512), bytes.Repeat([]byte{0xFF}, 512)...), want: ContentUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Probe(bytes.NewReader(tc.data), int64(len(tc.data)))
			if err != nil {
				t.Fatalf("Probe() error = %v", err)
			}
			if got != tc.want {
				t.Errorf("Probe(%s) = %s, want %s", tc.name, got, tc.want)
			}
		})
	}
}

func TestFindExt4Backup(t *testing.T) {
	data := make([]byte, 40<<20)
	binary.LittleEndian.PutUint16(data[16384*2048+0x38:], 0xEF53)
	b, ok := findExt4Backup(bytes.NewReader(data), int64(len(data)))
	if !ok || b != (ext4Backup{Block: 16384, BlockSize: 2048}) {
		t.Errorf("FindExt4Backup = %+v, %v", b, ok)
	}
	if _, ok := findExt4Backup(bytes.NewReader(data[:1<<20]), 1<<20); ok {
		t.Error("found a backup in a partition too small to hold one")
	}
}

// The struct must match the kernel's layout where it is read.
func TestExt4SuperblockLayout(t *testing.T) {
	if ext4MagicOffset != 0x38 || binary.Size(ext4Superblock{}) != 0x3c {
		t.Errorf("magic at %#x, struct %#x bytes; want 0x38 and 0x3c (fs/ext4/ext4.h)", ext4MagicOffset, binary.Size(ext4Superblock{}))
	}
	b := make([]byte, 0x3c)
	binary.LittleEndian.PutUint32(b[0x18:], 2) // s_log_block_size
	binary.LittleEndian.PutUint16(b[0x38:], 0xEF53)
	sb, err := parseExt4Superblock(b)
	if err != nil || !sb.valid() || sb.LogBlockSize != 2 {
		t.Errorf("parseExt4Superblock = %+v, %v", sb, err)
	}
}
