package imagebuild

import (
	"errors"
	"io"
	"slices"

	"github.com/diskfs/go-diskfs/backend"
)

// writeBack is a go-diskfs backend that keeps every write in memory, in
// pages, and writes them to the file in a few large writes when it is
// closed. go-diskfs writes a FAT file one cluster at a time (512 bytes on
// a boot partition of up to 260 MiB, as mkfs.fat does) and the whole FAT
// (1 MiB for 128 MiB) again on each file: 23,000 pwrite calls for a kernel
// and an initramfs, most of the boot partition's 0.15-0.25 s. Reads see
// the writes. The boot partition's writes are some MiB; the squashfs is
// not written through it.
type writeBack struct {
	backend.Storage
	file  backend.WritableFile
	pages map[int64][]byte // page number -> its bytes
	size  int64            // the file's size: the last page is cut there
}

const writeBackPage = 64 << 10

func newWriteBack(s backend.Storage) (*writeBack, error) {
	f, err := s.Writable()
	if err != nil {
		return nil, err
	}
	fi, err := s.Stat()
	if err != nil {
		return nil, err
	}
	return &writeBack{Storage: s, file: f, pages: map[int64][]byte{}, size: fi.Size()}, nil
}

// page returns page n, read from the file when it is not held yet (past
// the file's end it is zeros, as a new sparse file reads).
func (w *writeBack) page(n int64) ([]byte, error) {
	if p, ok := w.pages[n]; ok {
		return p, nil
	}
	p := make([]byte, writeBackPage)
	if _, err := w.file.ReadAt(p, n*writeBackPage); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	w.pages[n] = p
	return p, nil
}

// span calls f for each page piece of [off, off+len(b)).
func span(b []byte, off int64, f func(n int64, in int, b []byte) error) error {
	for len(b) > 0 {
		n, in := off/writeBackPage, int(off%writeBackPage)
		k := min(len(b), writeBackPage-in)
		if err := f(n, in, b[:k]); err != nil {
			return err
		}
		b, off = b[k:], off+int64(k)
	}
	return nil
}

func (w *writeBack) WriteAt(b []byte, off int64) (int, error) {
	err := span(b, off, func(n int64, in int, b []byte) error {
		p, err := w.page(n)
		if err == nil {
			copy(p[in:], b)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w *writeBack) ReadAt(b []byte, off int64) (int, error) {
	done := 0
	err := span(b, off, func(n int64, in int, b []byte) error {
		if p, ok := w.pages[n]; ok {
			done += copy(b, p[in:])
			return nil
		}
		k, err := w.file.ReadAt(b, n*writeBackPage+int64(in))
		done += k
		return err
	})
	return done, err
}

// Writable is the buffer itself: go-diskfs reads and writes through it.
func (w *writeBack) Writable() (backend.WritableFile, error) { return w, nil }

// flush writes the held pages in order, one write each (some hundred
// writes of 64 KiB, against tens of thousands of 512 bytes).
func (w *writeBack) flush() error {
	nums := make([]int64, 0, len(w.pages))
	for n := range w.pages {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	for _, n := range nums {
		off := n * writeBackPage
		p := w.pages[n][:max(0, min(writeBackPage, w.size-off))]
		if _, err := w.file.WriteAt(p, off); err != nil {
			return err
		}
	}
	clear(w.pages)
	return nil
}

// Close writes what is held and closes the file.
func (w *writeBack) Close() error {
	err := w.flush()
	if cerr := w.Storage.Close(); err == nil {
		err = cerr
	}
	return err
}
