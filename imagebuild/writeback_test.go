package imagebuild

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
)

// Writes through the buffer, read back before and after the flush, give the
// file a direct write gives: same bytes, same size (the last page is not
// written past the end).
func TestWriteBack(t *testing.T) {
	const size = 5*writeBackPage + 1234
	dir := t.TempDir()
	want := make([]byte, size)
	raw, err := file.CreateFromPath(filepath.Join(dir, "img"), size)
	if err != nil {
		t.Fatal(err)
	}
	w, err := newWriteBack(raw)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		n := 1 + rng.IntN(3*writeBackPage)
		if i%3 == 0 {
			n = 512
		}
		off := rng.Int64N(size - int64(n))
		if i == 0 { // the last byte
			n, off = 1, size-1
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if _, err := w.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], b)
		// Reads see the writes, whether their pages are held or not.
		roff := rng.Int64N(size - 4096)
		got := make([]byte, 4096)
		if _, err := w.ReadAt(got, roff); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[roff:roff+4096]) {
			t.Fatalf("write %d: ReadAt(%d) differs from what was written", i, roff)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != size {
		t.Fatalf("file is %d bytes, want %d", len(got), size)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the file differs from the writes")
	}
}
