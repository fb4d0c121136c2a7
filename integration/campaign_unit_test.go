package integration

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/ovroot/ovroot/internal/logwrites"
)

func TestCrashFsckProblems(t *testing.T) {
	out := `Pass 5: Checking group summary information
Free blocks count wrong for group #1 (7933, counted=6909).
Fix? no

Free blocks count wrong (122834, counted=117655).
Fix? no

Free inodes count wrong (16374, counted=16107).
Fix? no

Resize inode not valid.  Recreate? no
`
	got := crashFsckProblems(out)
	want := []string{"Free blocks count wrong for group #1 (7933, counted=6909).", "Resize inode not valid.  Recreate"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("crashFsckProblems = %q, want %q", got, want)
	}
	if got := crashFsckProblems("Free blocks count wrong (1, counted=2).\nFix? no\n"); len(got) != 0 {
		t.Errorf("global count flagged: %q", got)
	}
}

// writeLog makes a dm-log-writes log (512-byte sectors) of writes (data
// at sector) and flushes (nil data), all declared.
func writeLog(t *testing.T, entries []struct {
	sector uint64
	data   []byte
}) *logwrites.Log {
	t.Helper()
	var b bytes.Buffer
	sector := func(p []byte) {
		b.Write(p)
		b.Write(make([]byte, (512-len(p)%512)%512))
	}
	sb := make([]byte, 28)
	binary.LittleEndian.PutUint64(sb[0:], logwrites.Magic)
	binary.LittleEndian.PutUint64(sb[8:], logwrites.Version)
	binary.LittleEndian.PutUint64(sb[16:], uint64(len(entries)))
	binary.LittleEndian.PutUint32(sb[24:], 512)
	sector(sb)
	for _, e := range entries {
		h := make([]byte, 32)
		binary.LittleEndian.PutUint64(h[0:], e.sector)
		if e.data == nil {
			binary.LittleEndian.PutUint64(h[16:], logwrites.FlagFlush)
		} else {
			binary.LittleEndian.PutUint64(h[8:], uint64((len(e.data)+511)/512))
		}
		sector(h)
		if e.data != nil {
			sector(e.data)
		}
	}
	l, err := logwrites.Read(bytes.NewReader(b.Bytes()), int64(b.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestDurableAt(t *testing.T) {
	journal := bytes.Repeat([]byte{0xa5}, 4096)
	l := writeLog(t, []struct {
		sector uint64
		data   []byte
	}{
		{100, writerPattern(0)}, // 0
		{8, journal},            // 1
		{},                      // 2: flush -> boundary 3
		{11, journal},           // 3: a write of the kernel's own
		{200, writerPattern(1)}, // 4: the writer began file 1: file 0's fsync returned
		{},                      // 5: flush -> boundary 6
		{9, journal},            // 6
		{},                      // 7: flush -> boundary 8
		{300, writerPattern(2)}, // 8: file 1's fsync returned
		{10, journal},           // 9: the cut: no flush for file 2
	})
	for _, tc := range []struct {
		name    string
		console string
		want    []int
	}{
		{"the console saw files 0 and 1", "DURABLE 0\nDURABLE 1\n", []int{3, 8}},
		{"the console saw file 2 too: it must be whole at the last flush", "DURABLE 0\nDURABLE 1\nDURABLE 2\n", []int{3, 8, 8}},
		{"the console missed the last lines: the log still proves 0 and 1", "DURABLE 0\n", []int{3, 8}},
	} {
		rec := &recording{log: l, console: tc.console}
		if got := durableAt(rec); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: durableAt = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestConsoleDurable(t *testing.T) {
	console := "GUEST-OUT\nDURABLE 0\nDURABLE 1\nsome DURABLE 7 in a line\nDURABLE 2\n"
	if got, want := consoleDurable(console), []int{0, 1, 2}; !reflect.DeepEqual(got, want) {
		t.Errorf("consoleDurable = %v, want %v", got, want)
	}
}
