package reset

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// powerCuts models the data filesystem (ext4, journalled metadata, delayed
// allocation) across a power cut, watching a real directory through the
// package's fsync seam: metadata changes (creates, renames, removals, modes,
// xattrs) reach the disk in order, and every fsync, of a file or of a
// directory, commits all of them; a file's data is on disk only as it was
// at that file's last fsync (never synced: empty). A cut between two
// commits leaves the tree of the first. The reset must be right at every
// such point, which is what an fsync dropped from it breaks.
type powerCuts struct {
	t       *testing.T
	root    string
	commits [][]node                   // the tree at each commit; [0] is the start
	data    map[fileID][]versionedData // each file's synced contents
}

type fileID struct {
	ino   uint64
	btime unix.StatxTimestamp // tells a reused inode number apart
}

type versionedData struct {
	commit  int
	content []byte
}

// node is one entry of the tree as its metadata is on disk.
type node struct {
	rel    string
	mode   uint32 // st_mode: type and permissions
	rdev   uint64
	target string
	xattrs map[string]string
	id     fileID
}

// watchPowerCuts records root as durable now and routes the package's
// fsync through the model until the test ends.
func watchPowerCuts(t *testing.T, root string) *powerCuts {
	t.Helper()
	pc := &powerCuts{t: t, root: root, data: map[fileID][]versionedData{}}
	tree := pc.snapshot()
	for _, n := range tree {
		if n.mode&unix.S_IFMT == unix.S_IFREG {
			b, err := os.ReadFile(filepath.Join(root, n.rel))
			if err != nil {
				t.Fatal(err)
			}
			pc.data[n.id] = []versionedData{{0, b}}
		}
	}
	pc.commits = append(pc.commits, tree)
	real := fsync
	fsync = func(f *os.File) error {
		if err := real(f); err != nil {
			return err
		}
		pc.commit(f)
		return nil
	}
	t.Cleanup(func() { fsync = real })
	return pc
}

func idOf(t *testing.T, dirfd int, path string, flags int) fileID {
	t.Helper()
	var sx unix.Statx_t
	if err := unix.Statx(dirfd, path, flags|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_BTIME, &sx); err != nil {
		t.Fatalf("statx %s: %v", path, err)
	}
	id := fileID{ino: sx.Ino}
	if sx.Mask&unix.STATX_BTIME != 0 {
		id.btime = sx.Btime
	}
	return id
}

// commit is an fsync of f: f's data as it is now, and the whole tree.
func (pc *powerCuts) commit(f *os.File) {
	fi, err := f.Stat()
	if err != nil {
		pc.t.Fatal(err)
	}
	if fi.Mode().IsRegular() {
		// f may be write-only: read it through /proc.
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if err != nil {
			pc.t.Fatal(err)
		}
		id := idOf(pc.t, int(f.Fd()), "", unix.AT_EMPTY_PATH)
		pc.data[id] = append(pc.data[id], versionedData{len(pc.commits), b})
	}
	pc.commits = append(pc.commits, pc.snapshot())
}

func (pc *powerCuts) snapshot() []node {
	var tree []node
	err := filepath.WalkDir(pc.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrPermission) && d != nil && d.IsDir() {
				return nil // overlayfs's mode-000 work/work, unprivileged: empty
			}
			return err
		}
		rel, _ := filepath.Rel(pc.root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{rel: rel, mode: st.Mode, rdev: st.Rdev, id: idOf(pc.t, unix.AT_FDCWD, p, 0), xattrs: xattrs(p)}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			n.target, _ = os.Readlink(p)
		}
		tree = append(tree, n)
		return nil
	})
	if err != nil {
		pc.t.Fatal(err)
	}
	return tree
}

func xattrs(p string) map[string]string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	m := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 256)
		if vn, err := unix.Lgetxattr(p, name, v); err == nil {
			m[name] = string(v[:vn])
		}
	}
	return m
}

// after writes the disk as a power cut right after commit k leaves it into
// a new directory and returns it.
func (pc *powerCuts) after(k int) string {
	t := pc.t
	t.Helper()
	dst := t.TempDir()
	var dirs []node
	for _, n := range pc.commits[k] {
		p := filepath.Join(dst, n.rel)
		var err error
		switch n.mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if n.rel != "." {
				err = os.Mkdir(p, 0o700)
			}
			dirs = append(dirs, n)
		case unix.S_IFREG:
			var content []byte
			for _, v := range pc.data[n.id] {
				if v.commit <= k {
					content = v.content
				}
			}
			err = os.WriteFile(p, content, 0o600)
		case unix.S_IFLNK:
			err = os.Symlink(n.target, p)
		default:
			err = unix.Mknod(p, n.mode, int(n.rdev))
		}
		if err != nil {
			t.Fatalf("recreate %s after commit %d: %v", n.rel, k, err)
		}
		for name, v := range n.xattrs {
			if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
				t.Fatalf("recreate %s after commit %d: xattr %s: %v", n.rel, k, name, err)
			}
		}
		if n.mode&unix.S_IFMT != unix.S_IFLNK && n.mode&unix.S_IFMT != unix.S_IFDIR {
			os.Chmod(p, os.FileMode(n.mode&0o777))
		}
	}
	// Directories' modes last, deepest first: work/work is mode 000.
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chmod(filepath.Join(dst, dirs[i].rel), os.FileMode(dirs[i].mode&0o777))
	}
	return dst
}

// A request is on disk whole once Schedule returns, and at no power cut
// before is it there damaged: it is absent or complete.
func TestScheduleDurable(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	pc := watchPowerCuts(t, dir)
	if err := Schedule(dir, TriggerCtl, now); err != nil {
		t.Fatal(err)
	}
	last := len(pc.commits) - 1
	for k := range pc.commits {
		p, err := Pending(pc.after(k))
		whole := err == nil && p != nil && p.Trigger == TriggerCtl && p.Time.Equal(now)
		if k == last && !whole || p != nil && !whole {
			t.Errorf("power cut after commit %d of %d: pending request %+v, %v; want the whole request (none is fine before the last commit)", k, last, p, err)
		}
	}
}

// A power cut after any commit of a reset leaves a disk that the next
// boot's reset finishes with the same result; after the last one, the
// reset is done and recorded.
func TestPerformDurable(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 0)
	if err := Schedule(dir, TriggerButton, time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	pc := watchPowerCuts(t, dir)
	if _, err := (&Resetter{Dir: dir, Keep: keepList}).Perform(); err != nil {
		t.Fatal(err)
	}
	fsync = (*os.File).Sync // the boots after the cut sync for real
	if len(pc.commits) < 10 {
		t.Fatalf("only %d commits seen: is every sync going through fsync?", len(pc.commits))
	}
	last := len(pc.commits) - 1
	for k := range pc.commits {
		d := pc.after(k)
		if k == last {
			if p, _ := Pending(d); p != nil {
				t.Errorf("power cut right after Perform returned: the request is back: %+v", p)
			}
		}
		if _, err := (&Resetter{Dir: d, Keep: keepList}).Perform(); err != nil {
			t.Fatalf("power cut after commit %d of %d: the next reset: %v", k, last, err)
		}
		checkReset(t, d, nil, TriggerButton)
		if t.Failed() {
			t.Fatalf("power cut after commit %d of %d", k, last)
		}
	}
}
