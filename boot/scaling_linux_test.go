package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/reset"
	"golang.org/x/sys/unix"
)

// fsEvents counts what is done to a directory tree through the kernel's
// inotify: every open, read, write, close, attribute change, creation,
// deletion and move of an entry of a watched directory, by any code of the
// process, through any API. It sees a walk (each directory opened and
// read), an fsync of each file (each opened) and a deletion (each entry).
type fsEvents struct {
	fd  int
	wds map[int32]string
}

// watchTree watches every directory below root as it is now.
func watchTree(t *testing.T, root string) *fsEvents {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	w := &fsEvents{fd: fd, wds: map[int32]string{}}
	// List first, watch after: listing a watched directory is an event.
	var dirs []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range dirs {
		wd, err := unix.InotifyAddWatch(fd, p, unix.IN_ALL_EVENTS)
		if err != nil {
			t.Fatalf("watch %s: %v", p, err)
		}
		rel, _ := filepath.Rel(root, p)
		w.wds[int32(wd)] = rel
	}
	return w
}

// read returns how many events there were, and a summary of them by
// directory and kind.
func (w *fsEvents) read(t *testing.T) (int, string) {
	t.Helper()
	n := 0
	byKind := map[string]int{}
	buf := make([]byte, 64<<10)
	for {
		m, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatalf("read inotify: %v", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= m; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			l := int(binary.NativeEndian.Uint32(buf[off+12:]))
			off += unix.SizeofInotifyEvent + l
			n++
			dir := w.wds[wd]
			if mask&unix.IN_Q_OVERFLOW != 0 {
				dir = "(queue overflow)"
			}
			byKind[fmt.Sprintf("%s %#x", dir, mask&^unix.IN_ISDIR)]++
		}
	}
	var lines []string
	for k, c := range byKind {
		lines = append(lines, fmt.Sprintf("%s ×%d", k, c))
	}
	sort.Strings(lines)
	return n, strings.Join(lines, ", ")
}

// The boot path costs the same for an upper of 10 files as for one of
// 10,000 (in 100 directories): with or without a factory reset, it never
// walks, reads, syncs or deletes the old upper's content. The operations
// on the upper are counted, not timed.
func TestBootUpperO1(t *testing.T) {
	for _, withReset := range []bool{true, false} {
		t.Run(fmt.Sprintf("reset=%v", withReset), func(t *testing.T) {
			count := map[int]int{}
			summary := map[int]string{}
			for _, files := range []int{10, 10000} {
				var events *fsEvents
				e := &bootEnv{config: "[reset]\nkeep = [\"/etc/dropbear\"]\n",
					sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
					setup: func(root string) {
						usedData(t, root)
						for i := 0; i < files; i++ {
							p := filepath.Join(root, fmt.Sprintf("overlay/upper/data/d%03d/f%05d", i/100, i))
							if i%100 == 0 {
								if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
									t.Fatal(err)
								}
							}
							if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
								t.Fatal(err)
							}
						}
						if withReset {
							if err := reset.Schedule(filepath.Join(root, "overlay"), reset.TriggerCtl, time.Unix(5, 0)); err != nil {
								t.Fatal(err)
							}
						}
						events = watchTree(t, filepath.Join(root, "overlay/upper"))
					}}
				b, err := e.run(t)
				if err != nil {
					t.Fatal(err)
				}
				if st := b.State(); withReset != (st.Reset != nil) {
					t.Fatalf("state reset = %+v, want a reset: %v", st.Reset, withReset)
				}
				count[files], summary[files] = events.read(t)
			}
			if count[10] != count[10000] {
				t.Errorf("operations on the old upper: %d with 10 files, %d with 10,000: the boot path is O(files)\n10 files: %s\n10,000 files: %s",
					count[10], count[10000], summary[10], summary[10000])
			}
			t.Logf("%d operations on the old upper either way: %s", count[10], summary[10])
		})
	}
}
