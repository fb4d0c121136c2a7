package imagebuild

import (
	"errors"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// treeDirs opens the directories of a tree being unpacked one component at
// a time, each with openat(parent, name, O_DIRECTORY|O_NOFOLLOW) from the
// descriptor of the tree's top (opened through its os.Root), and keeps
// them open: placing 50,000 entries through os.Root walked every path from
// the top again for each lookup, create, rename and time change (a third
// of a 3-layer image's unpack time, pprof). A symlink is never followed:
// not as a directory on the way (O_NOFOLLOW fails on it), not as the last
// component (every call takes it as a name in a directory descriptor).
// Anything that removes a directory (replace) must call forget.
type treeDirs struct {
	root *os.Root
	top  *os.File
	open map[string]*os.File // by slash path relative to the top
}

// maxOpenDirs bounds the descriptors kept: archives list a directory's
// entries together, so the working set is a few directories deep.
const maxOpenDirs = 512

func newTreeDirs(root *os.Root) (*treeDirs, error) {
	top, err := root.Open(".")
	if err != nil {
		return nil, err
	}
	return &treeDirs{root: root, top: top, open: map[string]*os.File{}}, nil
}

func (d *treeDirs) close() {
	d.drop()
	d.top.Close()
}

// drop closes every kept directory but the top.
func (d *treeDirs) drop() {
	for _, f := range d.open {
		f.Close()
	}
	clear(d.open)
}

// forget closes rel and everything kept below it: rel was removed.
func (d *treeDirs) forget(rel string) {
	for p, f := range d.open {
		if p == rel || strings.HasPrefix(p, rel+"/") {
			f.Close()
			delete(d.open, p)
		}
	}
}

// trim closes the kept directories when there are too many; descriptors
// handed out before it are then invalid, so it runs between entries.
func (d *treeDirs) trim() {
	if len(d.open) > maxOpenDirs {
		d.drop()
	}
}

// dir returns a descriptor of directory rel ("" or "." for the top),
// creating the missing ones (0755) when create. It stays valid until the
// next trim or forget.
func (d *treeDirs) dir(rel string, create bool) (int, error) {
	return d.dirAt(path.Clean(rel), create)
}

func (d *treeDirs) dirAt(rel string, create bool) (int, error) {
	if rel == "." || rel == "" {
		return int(d.top.Fd()), nil
	}
	if f, ok := d.open[rel]; ok {
		return int(f.Fd()), nil
	}
	pfd, err := d.dirAt(path.Dir(rel), create)
	if err != nil {
		return -1, err
	}
	base := path.Base(rel)
	open := func() (int, error) {
		return unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	fd, err := open()
	if errors.Is(err, unix.ENOENT) && create {
		if err = unix.Mkdirat(pfd, base, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
			fd, err = open()
		}
	}
	if err != nil {
		return -1, &os.PathError{Op: "open directory", Path: rel, Err: err}
	}
	d.open[rel] = os.NewFile(uintptr(fd), rel)
	return fd, nil
}

// inParent runs fn with a descriptor of rel's parent directory and rel's
// last component, which fn must not follow ("." for the top itself).
func (d *treeDirs) inParent(rel string, fn func(fd int, base string) error) error {
	rel = path.Clean(rel)
	if rel == "." || rel == "" {
		return fn(int(d.top.Fd()), ".")
	}
	fd, err := d.dir(path.Dir(rel), false)
	if err != nil {
		return err
	}
	return fn(fd, path.Base(rel))
}

// exists reports whether rel exists (not following a final symlink).
func (d *treeDirs) exists(rel string) (bool, error) {
	found := false
	err := d.inParent(rel, func(fd int, base string) error {
		var st unix.Stat_t
		err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		found = err == nil
		return err
	})
	return found, err
}

// setTime sets rel's access and modification times, not following a
// symlink; best effort, as the times only make builds reproducible.
func (d *treeDirs) setTime(rel string, t time.Time) {
	d.inParent(rel, func(fd int, base string) error {
		ts := unix.NsecToTimespec(t.UnixNano())
		return unix.UtimesNanoAt(fd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	})
}
