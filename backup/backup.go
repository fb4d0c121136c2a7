// Package backup writes an overlayfs upper directory as an OCI image layer
// (a tar changeset, image-spec layer.md), so a device's changes can be kept,
// restored or baked into an image as its top layer (issue 19).
//
// The upper's own marks become the layer's (Documentation/filesystems/
// overlayfs.rst, "whiteouts and opaque directories"): a whiteout (character
// device 0/0) is an empty regular file .wh.NAME; an opaque directory
// (trusted.overlay.opaque=y, or user.overlay.opaque=y under userxattr) is
// the directory's entry followed by an empty .wh..wh..opq. Extended
// attributes are carried as PAX SCHILY.xattr records, except overlayfs's
// own (trusted.overlay.*, user.overlay.*). An upper written with
// redirect_dir or metacopy (a file whose data or name is in the lower) is
// refused: such an entry is not self-contained.
//
// The upper is read while the system runs, so the copy is verified: after
// the layer is written, the upper is walked again and every entry's inode,
// mode, size, mtime and ctime must be what they were when it was read (any
// write or metadata change moves ctime). A difference starts the copy over;
// after a few attempts the error names the path that kept changing.
// Freezing the data filesystem (FIFREEZE) would stop the running system's
// writes instead, which is why it is not used.
//
// It only reads the upper; it mounts nothing and does not restore (package
// reset does, at boot: ovrootctl restore).
package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The layer format this package writes and imagebuild and reset read:
// OCI whiteout names (image-spec layer.md, "Whiteouts"; other .wh..wh.
// names are aufs's bookkeeping), the PAX records of xattrs, and what an
// overlayfs upper has for them (overlayfs.rst, "whiteouts and opaque
// directories").
const (
	WhiteoutPrefix = ".wh."
	WhiteoutMeta   = ".wh..wh."
	WhiteoutOpaque = ".wh..wh..opq"
	PAXXattr       = "SCHILY.xattr."
	OverlayOpaque  = "trusted.overlay.opaque"
)

// IsWhiteout reports whether st is an overlayfs whiteout: a character
// device 0/0.
func IsWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// OverlayOwn reports whether an xattr is overlayfs's own bookkeeping
// (trusted.overlay.*, or user.overlay.* under userxattr), not the file's.
func OverlayOwn(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

// Attempts is how many times WriteFile copies an upper that changes while
// it is read before it gives up.
const Attempts = 3

// Options says how a layer is written.
type Options struct {
	// Gzip compresses the tar stream (a tar+gzip layer).
	Gzip bool
	// Skip leaves out entries of the upper with this device and inode
	// (the output file itself, should it be inside the upper); 0/0 skips
	// nothing.
	SkipDev, SkipIno uint64
	// RootOwned writes every entry as owned by root (uid and gid 0), as
	// mksquashfs -all-root stores a directory rootfs; Root adds the tree's
	// root directory as "./". imagebuild reads a directory rootfs as the
	// bottom layer with both.
	RootOwned, Root bool
	// afterEntry runs after each entry is written (tests change files).
	afterEntry func(name string)
}

// ChangedError says the upper changed while it was copied.
type ChangedError struct {
	Path string // "/etc/x", relative to the upper
	What string // "size 3 -> 5", "appeared", "vanished"...
}

func (e *ChangedError) Error() string {
	return fmt.Sprintf("%s changed while it was read (%s)", e.Path, e.What)
}

// stamp is what must not move between the copy and the check.
type stamp struct {
	ino, size   int64
	mode        uint32
	mtime, ctim int64
}

func stampOf(st *unix.Stat_t) stamp {
	return stamp{ino: int64(st.Ino), size: st.Size, mode: st.Mode, mtime: st.Mtim.Nano(), ctim: st.Ctim.Nano()}
}

// WriteFile writes the layer of upper to out: to a temporary file next to
// it (.NAME.*.tmp, 0600), verified, synced and renamed into place, so out is either absent (or
// its old self) or a consistent copy. It tries up to Attempts times.
func WriteFile(upper, out string, o Options) error {
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename: nothing
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	// The output is never part of its own copy, should it be in the upper.
	o.SkipDev, o.SkipIno = uint64(st.Dev), st.Ino
	var last error
	for range Attempts {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := f.Truncate(0); err != nil {
			return err
		}
		last = Write(f, upper, o)
		var ch *ChangedError
		if errors.As(last, &ch) {
			continue
		}
		if last != nil {
			return last
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", tmp, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(tmp, out)
	}
	return fmt.Errorf("the upper %s kept changing: %w (in each of %d attempts); stop what writes it and try again", upper, last, Attempts)
}

// Write writes the layer of upper to w once, then walks the upper again
// and returns a *ChangedError when anything changed meanwhile (what was
// written to w is then inconsistent and must be discarded).
func Write(w io.Writer, upper string, o Options) error {
	var zw interface {
		io.Writer
		Close() error
	}
	if o.Gzip {
		zw = gzip.NewWriter(w)
		w = zw
	}
	tw := tar.NewWriter(w)
	seen, err := writeTree(tw, upper, o)
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	now, err := stamps(upper, o)
	if err != nil {
		return err
	}
	return compare(seen, now)
}

// compare names the first path (in order) whose stamp differs.
func compare(before, after map[string]stamp) error {
	names := make([]string, 0, len(before)+len(after))
	for n := range before {
		names = append(names, n)
	}
	for n := range after {
		if _, ok := before[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b, inB := before[n]
		a, inA := after[n]
		switch {
		case !inA:
			return &ChangedError{n, "vanished"}
		case !inB:
			return &ChangedError{n, "appeared"}
		case a.ino != b.ino || a.mode != b.mode:
			return &ChangedError{n, "replaced"}
		case a.size != b.size:
			return &ChangedError{n, fmt.Sprintf("size %d -> %d", b.size, a.size)}
		case a != b:
			return &ChangedError{n, "written or its metadata changed"}
		}
	}
	return nil
}

// walk calls fn for every entry of upper below its root, in lexical
// order, with its name relative to the upper ("etc/x") and its stat.
func walk(upper string, o Options, fn func(rel, p string, st *unix.Stat_t) error) error {
	return filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != upper {
				rel, _ := filepath.Rel(upper, p)
				return &ChangedError{"/" + filepath.ToSlash(rel), "vanished"}
			}
			return err
		}
		if p == upper {
			return nil
		}
		rel, _ := filepath.Rel(upper, p)
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return &ChangedError{"/" + rel, "vanished"}
			}
			return fmt.Errorf("%s: %w", p, err)
		}
		if o.SkipIno != 0 && uint64(st.Dev) == o.SkipDev && st.Ino == o.SkipIno {
			return nil
		}
		return fn(rel, p, &st)
	})
}

func stamps(upper string, o Options) (map[string]stamp, error) {
	m := map[string]stamp{}
	err := walk(upper, o, func(rel, _ string, st *unix.Stat_t) error {
		m["/"+rel] = stampOf(st)
		return nil
	})
	return m, err
}

type inode struct{ dev, ino uint64 }

func writeTree(tw *tar.Writer, upper string, o Options) (map[string]stamp, error) {
	seen := map[string]stamp{}
	links := map[inode]string{} // first name of each multiply linked inode
	if o.Root {
		var st unix.Stat_t
		if err := unix.Stat(upper, &st); err != nil {
			return nil, err
		}
		h := &tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid), ModTime: time.Unix(st.Mtim.Unix()), Format: tar.FormatPAX}
		if o.RootOwned {
			h.Uid, h.Gid = 0, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	err := walk(upper, o, func(rel, p string, st *unix.Stat_t) error {
		seen["/"+rel] = stampOf(st)
		if o.RootOwned {
			st.Uid, st.Gid = 0, 0
		}
		if err := writeEntry(tw, rel, p, st, links); err != nil {
			var ch *ChangedError
			if errors.As(err, &ch) {
				return err
			}
			return fmt.Errorf("%s: %w", p, err)
		}
		if o.afterEntry != nil {
			o.afterEntry(rel)
		}
		return nil
	})
	return seen, err
}

func writeEntry(tw *tar.Writer, rel, p string, st *unix.Stat_t, links map[inode]string) error {
	h := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix()),
		Format:  tar.FormatPAX,
	}
	ft := st.Mode & unix.S_IFMT
	// A whiteout first: overlayfs may share one whiteout inode among many
	// names (a hard link each), which are not hard links of the layer.
	if IsWhiteout(st) {
		dir, base := path.Split(rel)
		h.Name = dir + WhiteoutPrefix + base
		h.Typeflag = tar.TypeReg
		h.Mode = 0o600
		return tw.WriteHeader(h)
	}
	// A name a layer reader takes for a whiteout cannot be carried as a
	// file (image-spec layer.md reserves the prefix).
	if strings.HasPrefix(path.Base(rel), WhiteoutPrefix) {
		return fmt.Errorf("/%s: a name starting with %s cannot be stored in an OCI layer (it would be read as a whiteout); rename it", rel, WhiteoutPrefix)
	}
	x, opaque, err := xattrs(p, "/"+rel)
	if err != nil {
		return err
	}
	for k, v := range x {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords[PAXXattr+k] = v
	}
	if ft != unix.S_IFDIR && st.Nlink > 1 {
		id := inode{uint64(st.Dev), st.Ino}
		if first, ok := links[id]; ok {
			h.Typeflag, h.Linkname, h.PAXRecords = tar.TypeLink, first, nil
			return tw.WriteHeader(h)
		}
		links[id] = rel
	}
	switch ft {
	case unix.S_IFDIR:
		h.Typeflag = tar.TypeDir
		h.Name += "/"
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if opaque {
			return tw.WriteHeader(&tar.Header{Name: rel + "/" + WhiteoutOpaque, Typeflag: tar.TypeReg, Mode: 0o600, Uid: h.Uid, Gid: h.Gid, ModTime: h.ModTime, Format: tar.FormatPAX})
		}
		return nil
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
		return tw.WriteHeader(h)
	case unix.S_IFCHR, unix.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if ft == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(uint64(st.Rdev))), int64(unix.Minor(uint64(st.Rdev)))
		return tw.WriteHeader(h)
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
		return tw.WriteHeader(h)
	case unix.S_IFSOCK:
		return nil // a socket is a running program's, not a file to keep (tar has no type for it)
	}
	h.Typeflag, h.Size = tar.TypeReg, st.Size
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &ChangedError{"/" + rel, "vanished"}
		}
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.CopyN(tw, f, st.Size)
	if errors.Is(err, io.EOF) {
		return &ChangedError{"/" + rel, fmt.Sprintf("size %d -> %d", st.Size, n)}
	}
	return err
}

// xattrs returns an entry's extended attributes other than overlayfs's
// own, and whether it is an opaque directory. redirect and metacopy marks
// are refused.
func xattrs(p, name string) (map[string]string, bool, error) {
	names, err := listXattr(p)
	if err != nil {
		return nil, false, fmt.Errorf("list xattrs: %w", err)
	}
	var out map[string]string
	opaque := false
	for _, n := range names {
		v, err := getXattr(p, n)
		if err != nil {
			return nil, false, fmt.Errorf("xattr %s: %w", n, err)
		}
		if !OverlayOwn(n) {
			if out == nil {
				out = map[string]string{}
			}
			out[n] = string(v)
			continue
		}
		switch strings.SplitN(n, ".", 3)[2] {
		case "opaque":
			opaque = string(v) == "y"
		case "redirect", "metacopy":
			return nil, false, fmt.Errorf("%s has overlayfs's %s mark: its name or data is in the lower (redirect_dir or metacopy was on), so it cannot be copied as a layer", name, n)
		}
	}
	return out, opaque, nil
}

func listXattr(p string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range bytes.Split(buf[:n], []byte{0}) {
			if len(s) > 0 {
				names = append(names, string(s))
			}
		}
		return names, nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
