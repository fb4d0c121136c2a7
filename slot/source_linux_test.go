package slot

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// TestUpgradeRefusesPipe: a pipe cannot be read a second time, so it is
// refused before anything changes (it used to fail at the second read,
// after the other slot's entry was gone).
func TestUpgradeRefusesPipe(t *testing.T) {
	d := newDevice(t, deviceOpts{entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b.conf": {Slot: layout.SlotB, Generation: 1, BuildID: "bbbbbbbbbbbbbbbb", Loader: layout.LoaderUEFI}}})
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer w.Close()
		b, _ := os.Open(d.bundle)
		defer b.Close()
		io.Copy(w, b)
	}()
	before := d.tree()
	_, err := d.sys.Upgrade(fifo, UpgradeOptions{})
	if want := "is not a file or a block device (p---------): upgrade reads a bundle twice"; err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("Upgrade(fifo) = %v, want an error with %q", err, want)
	}
	if diff := diffTrees(before, d.tree()); len(diff) > 0 {
		t.Errorf("a refused upgrade changed the device:\n%s", strings.Join(diff, "\n"))
	}
}

var errLink = errors.New("the link went down")

// failingSource is the test bundle, whose open number fail (1 or 2)
// fails after at bytes (or whose open fails, at < 0).
func failingSource(path string, fail int, at int64) BundleSource {
	opens := 0
	return BundleSource{Name: "https://updates.example/x.bundle", Open: func() (io.ReadCloser, error) {
		opens++
		f, err := os.Open(path)
		if err != nil || opens != fail {
			return f, err
		}
		if at < 0 {
			f.Close()
			return nil, errLink
		}
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(f, at), errReader{}), f}, nil
	}}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errLink }

// TestUpgradeReadFails: a source that fails (a network gone for good)
// while it is checked changes nothing; while it is written, it leaves the
// other slot without an entry, as a power cut would, and the running
// slot's entry untouched; the next upgrade then succeeds.
func TestUpgradeReadFails(t *testing.T) {
	oldB := Entry{Slot: layout.SlotB, Generation: 1, BuildID: "bbbbbbbbbbbbbbbb", Loader: layout.LoaderUEFI}
	for _, tc := range []struct {
		name      string
		fail      int
		at        int64
		unchanged bool
	}{
		{"while checking, in the manifest", 1, 700, true},
		{"while checking, in the root", 1, 50_000, true},
		{"second open", 2, -1, false},
		{"while writing the root", 2, 50_000, false},
		{"while writing the initramfs", 2, 100<<10 + 123 + 5000 + 5*512 + 3000, false},
		// After the last member: a source that checks its digest at its
		// end (an OCI blob) fails only there.
		{"at the end, while checking", 1, 1 << 40, true},
		{"at the end, while writing", 2, 1 << 40, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, deviceOpts{entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b.conf": oldB}})
			before := d.tree()
			_, err := d.sys.UpgradeFrom(failingSource(d.bundle, tc.fail, tc.at), UpgradeOptions{})
			if !errors.Is(err, errLink) || !strings.Contains(err.Error(), "https://updates.example/x.bundle") && tc.at >= 0 {
				t.Fatalf("UpgradeFrom = %v, want %v naming the source", err, errLink)
			}
			if tc.unchanged {
				if diff := diffTrees(before, d.tree()); len(diff) > 0 {
					t.Errorf("a failed check changed the device:\n%s", strings.Join(diff, "\n"))
				}
				if !strings.Contains(err.Error(), "nothing was changed") {
					t.Errorf("error %q does not say nothing was changed", err)
				}
			} else if got := d.entryFiles(); !equal(got, []string{"ovroot-a.conf"}) {
				t.Errorf("entries after a failed write = %v, want only the running slot's", got)
			}
			if n := len(d.mounter.calls); n%2 != 0 {
				t.Errorf("mounts not undone: %v", d.mounter.calls)
			}
			if _, err := d.sys.Upgrade(d.bundle, UpgradeOptions{}); err != nil {
				t.Fatalf("the next upgrade: %v", err)
			}
			if got := d.entryFiles(); !equal(got, []string{"ovroot-a.conf", "ovroot-b+3.conf"}) {
				t.Errorf("entries after the next upgrade = %v", got)
			}
		})
	}
}
