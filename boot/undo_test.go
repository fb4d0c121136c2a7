package boot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/internal/testenv"
)

// failedRepair makes what the device had: a used ext4 (1 KiB
// blocks, backup superblock at 8 MiB) whose first 4 MiB were overwritten
// with seeded random bytes, then the repair the init runs on it (e2fsck
// -f -p from the backup superblock, with an undo file), which gives up.
// It returns the image, the undo file and the image's bytes before the
// repair.
func failedRepair(t *testing.T) (img, undo string, before []byte) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, tool+" not installed (make deps)")
		}
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 60; i++ {
		p := filepath.Join(tree, "d"+string(rune('a'+i%6)), "f"+strings.Repeat("x", i%5)+string(rune('a'+i%26)))
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := make([]byte, 1000*i)
		rng.Read(data)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img = filepath.Join(dir, "data.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "1024", "-L", "rootfs_data", "-d", tree, img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	garbage := make([]byte, 4<<20)
	rand.New(rand.NewSource(24)).Read(garbage)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(garbage, 0)
	f.Close()
	before, err = os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	undo = filepath.Join(dir, "repair.e2undo")
	out, err := exec.Command("e2fsck", "-z", undo, "-f", "-p", "-b", "8193", "-B", "1024", img).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() < 4 {
		t.Fatalf("e2fsck was to give up on this image (exit 4), got %v:\n%s", err, out)
	}
	after, _ := os.ReadFile(img)
	if bytes.Equal(after, before) {
		t.Fatalf("the failed repair changed nothing: the test would test nothing\n%s", out)
	}
	return img, undo, before
}

func openUndo(t *testing.T, path string) *undoLog {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	u, err := parseUndo(f, fi.Size())
	if err != nil {
		t.Fatalf("parseUndo: %v", err)
	}
	return u
}

// TestUndoRollback: e2fsck's own undo file of a repair that gave up,
// written back by our reader, leaves the partition byte-identical to what
// it was before the repair.
func TestUndoRollback(t *testing.T) {
	img, undo, before := failedRepair(t)
	u := openUndo(t, undo)
	if !u.finished || len(u.extents) == 0 {
		t.Fatalf("undo log: finished %v, %d extents", u.finished, len(u.extents))
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if same, _ := u.sameBytes(f); same {
		t.Fatal("sameBytes before the rollback")
	}
	if err := u.rollback(f); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(img)
	if !bytes.Equal(got, before) {
		t.Fatalf("after the rollback the image differs from before the repair (sha256 %x, want %x)", sha256.Sum256(got), sha256.Sum256(before))
	}
	if same, err := u.sameBytes(f); !same || err != nil {
		t.Errorf("sameBytes after the rollback = %v, %v", same, err)
	}
	t.Logf("rolled back %d bytes in %d extents", u.bytes(), len(u.extents))
}

// writeRecorder records a rollback's writes and applies none.
type writeRecorder struct{ ops []commitOp }

func (r *writeRecorder) WriteAt(p []byte, off int64) (int, error) {
	r.ops = append(r.ops, commitOp{off: off, data: append([]byte(nil), p...)})
	return len(p), nil
}
func (r *writeRecorder) Sync() error { return nil }

// memDev is a partition in memory for the rollback.
type memDev struct{ b []byte }

func (m *memDev) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }
func (m *memDev) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memDev) Sync() error                              { return nil }

// TestUndoRollbackPowerCut cuts the power during the rollback: the writes
// back have one sync, at the end, so any subset of them may be on the disk
// (each whole). Every such state holds, block for block, either the
// repair's bytes or the original ones; it is never taken for a blank
// partition (which the next boot would format) and the next boot, finding
// it damaged, tries the repair again under a new undo file; here the same
// log written again from any of those states gives back the original.
func TestUndoRollbackPowerCut(t *testing.T) {
	img, undo, before := failedRepair(t)
	repaired, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	u := openUndo(t, undo)
	rec := &writeRecorder{}
	if err := u.rollback(rec); err != nil {
		t.Fatal(err)
	}
	n := len(rec.ops)
	if n < 3 {
		t.Fatalf("the rollback makes %d writes: too few to cut between", n)
	}
	subsets := writeSubsets(n, rand.New(rand.NewSource(3)))
	for _, s := range subsets {
		dev := &memDev{b: append([]byte(nil), repaired...)}
		for _, i := range s {
			dev.WriteAt(rec.ops[i].data, rec.ops[i].off)
		}
		for i, op := range rec.ops {
			cur := dev.b[op.off : op.off+int64(len(op.data))]
			if !bytes.Equal(cur, before[op.off:op.off+int64(len(op.data))]) && !bytes.Equal(cur, repaired[op.off:op.off+int64(len(op.data))]) {
				t.Fatalf("cut with writes %v landed: extent %d is neither the original nor the repair's bytes", s, i)
			}
		}
		if c, err := Probe(dev, int64(len(dev.b))); err != nil || c == ContentBlank {
			t.Fatalf("cut with writes %v landed: the partition probes as %s (%v): the next boot would format it", s, c, err)
		}
		if err := u.rollback(dev); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dev.b, before) {
			t.Fatalf("cut with writes %v landed, then the rollback again: not the original", s)
		}
	}
	t.Logf("%d cut states of a %d-write rollback", len(subsets), n)
}

// A damaged undo file is refused before anything is written back: a
// flipped bit in the header, a key block or a saved block, or a file cut
// short.
func TestUndoRefusesDamage(t *testing.T) {
	_, undo, _ := failedRepair(t)
	good, err := os.ReadFile(undo)
	if err != nil {
		t.Fatal(err)
	}
	u := openUndo(t, undo)
	e := u.extents[0]
	cases := []struct {
		name string
		mod  func(b []byte) []byte
		want string
	}{
		{"magic", func(b []byte) []byte { b[0] ^= 1; return b }, "magic"},
		{"header bit", func(b []byte) []byte { b[40] ^= 1; return b }, "undo header: checksum"},
		{"key block bit", func(b []byte) []byte { b[e.dataOff-int64(u.blockSizeForTest(good))+20] ^= 1; return b }, "checksum"},
		{"saved block bit", func(b []byte) []byte { b[e.dataOff+5] ^= 0x80; return b }, "undo key 0"},
		{"cut short", func(b []byte) []byte { return b[:e.dataOff+e.size/2] }, "past the end"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mod(append([]byte(nil), good...))
			_, err := parseUndo(bytes.NewReader(b), int64(len(b)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("parseUndo(%s) = %v, want an error with %q", c.name, err, c.want)
			}
		})
	}
	// An empty file, or one whose header e2fsck never wrote, is nothing
	// to undo.
	// e2fsck that could not read the filesystem closes its undo file with
	// no keys and block size 0.
	noKeys := make([]byte, 3*1024)
	copy(noKeys, undoMagic)
	noKeys[36], noKeys[37], noKeys[44] = 0x00, 0x04, undoFinished // fs block size 1024, finished
	crc := e2crc32c(^uint32(0), noKeys[:undoHeaderSize-4])
	noKeys[508], noKeys[509], noKeys[510], noKeys[511] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
	for _, b := range [][]byte{nil, make([]byte, 3*1024), noKeys} {
		u, err := parseUndo(bytes.NewReader(b), int64(len(b)))
		if err != nil || len(u.extents) != 0 {
			t.Errorf("parseUndo(%d zero bytes) = %v, %v; want nothing to undo", len(b), u, err)
		}
	}
}

// blockSizeForTest is the undo file's block size, from its header.
func (u *undoLog) blockSizeForTest(file []byte) int {
	return int(file[32]) | int(file[33])<<8 | int(file[34])<<16 | int(file[35])<<24
}
