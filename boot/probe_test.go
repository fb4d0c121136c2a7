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
	for _, tc := range []struct {
		name string
		data []byte
		want Content
	}{
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
