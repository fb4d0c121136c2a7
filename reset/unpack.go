package reset

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// unpackLayer unpacks the backup layer read from r into dir, an empty
// directory, as the overlayfs upper it was taken from (the inverse of
// package backup): .wh.NAME becomes a character device 0/0 NAME,
// DIR/.wh..wh..opq the xattr trusted.overlay.opaque=y on DIR; owners,
// modes (setuid too), mtimes, xattrs, hard links, symlinks, devices and
// fifos as the tar says. It checks each entry as it reads it (layerCheck)
// and returns a *BadLayerError for a damaged or unacceptable layer, which
// may have left part of it in dir.
//
// Nothing is written outside dir: it is opened as an os.Root, every
// directory is opened through it, and every create, link, chown, chmod,
// time and xattr change is made by name in such a directory's descriptor
// without following the last component (*at calls with
// AT_SYMLINK_NOFOLLOW, O_NOFOLLOW|O_EXCL; xattrs through
// /proc/self/fd/N/NAME with lsetxattr). Symlinks are stored as they are and
// never followed; the check refuses entries below one anyway.
func unpackLayer(r io.Reader, dir string) (LayerSummary, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return LayerSummary{}, err
	}
	defer root.Close()
	top, err := root.Open(".")
	if err != nil {
		return LayerSummary{}, err
	}
	defer top.Close()
	lr, err := newLayerReader(r)
	if err != nil {
		return LayerSummary{}, err
	}
	c := newLayerCheck()
	u := &unpacker{root: root, top: top, made: map[string]bool{"": true}}
	defer u.closeDir()
	for {
		h, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return c.sum, err
		}
		a, name, err := c.entry(h)
		if err != nil {
			return c.sum, err
		}
		if err := u.place(a, name, h, lr); err != nil {
			var bad *BadLayerError
			if errors.As(err, &bad) {
				return c.sum, &BadLayerError{Entry: h.Name, Err: bad.Err}
			}
			return c.sum, fmt.Errorf("unpack %q: %w", h.Name, err)
		}
	}
	return c.sum, u.finish()
}

type unpacker struct {
	root *os.Root
	top  *os.File
	// One directory kept open: a layer lists a directory's entries
	// together.
	dirName string
	dirF    *os.File
	made    map[string]bool // directories created ("" is the top)
	dirs    []dirMeta       // directory modes and times, set last
}

type dirMeta struct {
	name string
	h    *tar.Header
}

func (u *unpacker) closeDir() {
	if u.dirF != nil {
		u.dirF.Close()
		u.dirF = nil
	}
}

// openDir opens directory d ("" for the top) through the root, not
// following a symlink as its last component.
func (u *unpacker) openDir(d string) (*os.File, error) {
	if d == "" {
		d = "."
	}
	return u.root.OpenFile(d, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
}

// parent returns a descriptor of rel's directory and rel's last
// component ("." for the top itself), valid until the next call.
func (u *unpacker) parent(rel string) (int, string, error) {
	if rel == "" {
		return int(u.top.Fd()), ".", nil
	}
	d, base := path.Split(rel)
	d = strings.TrimSuffix(d, "/")
	if d == "" {
		return int(u.top.Fd()), base, nil
	}
	if u.dirF == nil || u.dirName != d {
		u.closeDir()
		f, err := u.openDir(d)
		if err != nil {
			return -1, "", err
		}
		u.dirF, u.dirName = f, d
	}
	return int(u.dirF.Fd()), base, nil
}

// mkparents creates the directories above rel that the layer only
// implies (a/b of "a/b/c"), root's and 0755, as tar makes them.
func (u *unpacker) mkparents(rel string) error {
	for i := 0; i < len(rel); i++ {
		if rel[i] != '/' || u.made[rel[:i]] {
			continue
		}
		p := rel[:i]
		fd, base, err := u.parent(p)
		if err != nil {
			return err
		}
		if err := unix.Mkdirat(fd, base, 0o700); err != nil {
			return fmt.Errorf("mkdir %s: %w", p, err)
		}
		if err := unix.Fchownat(fd, base, 0, 0, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
		if err := unix.Fchmodat(fd, base, 0o755, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
		u.made[p] = true
	}
	return nil
}

// place makes what one checked entry becomes in the upper; content is
// read from r.
func (u *unpacker) place(a action, name string, h *tar.Header, r io.Reader) error {
	switch a {
	case actRoot:
		if err := unix.Fchownat(int(u.top.Fd()), ".", h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirMeta{"", h})
		return u.setXattrs("", h)
	case actWhiteout:
		if err := u.mkparents(name); err != nil {
			return err
		}
		fd, base, err := u.parent(name)
		if err != nil {
			return err
		}
		// What overlayfs makes for a removed name (overlayfs.rst).
		if err := unix.Mknodat(fd, base, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("whiteout %s: %w", name, err)
		}
		return unix.Fchownat(fd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW)
	case actOpaque:
		if err := u.mkparents(name + "/"); err != nil {
			return err
		}
		return u.setXattr(name, overlayOpaque, "y", true)
	}
	if err := u.mkparents(name); err != nil {
		return err
	}
	fd, base, err := u.parent(name)
	if err != nil {
		return err
	}
	mode := uint32(h.Mode & 0o7777)
	switch h.Typeflag {
	case tar.TypeDir:
		if !u.made[name] {
			if err := unix.Mkdirat(fd, base, 0o700); err != nil {
				return err
			}
			u.made[name] = true
		}
		if err := unix.Fchownat(fd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirMeta{name, h})
		return u.setXattrs(name, h) // mode and times last
	case tar.TypeReg:
		nfd, err := unix.Openat(fd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(nfd), name)
		_, err = io.Copy(f, r)
		if err == nil {
			// chown first: it clears setuid and setgid.
			err = f.Chown(h.Uid, h.Gid)
		}
		if err == nil {
			err = unix.Fchmod(nfd, mode)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(h.Linkname, fd, base); err != nil {
			return err
		}
		if err := unix.Fchownat(fd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	case tar.TypeLink:
		// The inode's owner, mode, times and xattrs are the first name's.
		return u.link(h, fd, base)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		dev := unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		if err := unix.Mknodat(fd, base, typ|0o600, int(dev)); err != nil {
			return err
		}
		if err := unix.Fchownat(fd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if err := unix.Fchmodat(fd, base, mode, 0); err != nil {
			return err
		}
	}
	if err := u.setXattrs(name, h); err != nil {
		return err
	}
	return u.setTimes(name, h)
}

// link makes the hard link h at (fd, base) to an earlier entry.
func (u *unpacker) link(h *tar.Header, fd int, base string) error {
	to, _ := cleanName(h.Linkname) // checked
	tdir, tbase := path.Split(to)
	tdir = strings.TrimSuffix(tdir, "/")
	var tfd int
	switch {
	case tdir == "":
		tfd = int(u.top.Fd())
	case tdir == u.dirName && u.dirF != nil:
		tfd = int(u.dirF.Fd())
	default:
		f, err := u.openDir(tdir)
		if err != nil {
			return err
		}
		defer f.Close()
		tfd = int(f.Fd())
	}
	// No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
	return unix.Linkat(tfd, tbase, fd, base, 0)
}

func (u *unpacker) setTimes(name string, h *tar.Header) error {
	fd, base, err := u.parent(name)
	if err != nil {
		return err
	}
	atime := h.AccessTime
	if atime.IsZero() {
		atime = h.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(fd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

func (u *unpacker) setXattrs(name string, h *tar.Header) error {
	for k, v := range layerXattrs(h) {
		if err := u.setXattr(name, k, v, false); err != nil {
			return err
		}
	}
	return nil
}

// setXattr sets one xattr on name, by its directory's descriptor and
// without following it. Like the reset's copy (copyXattrs), an attribute
// the filesystem does not support is skipped unless it is required (the
// opaque mark).
func (u *unpacker) setXattr(name, key, val string, required bool) error {
	fd, base, err := u.parent(name)
	if err != nil {
		return err
	}
	p := "/proc/self/fd/" + strconv.Itoa(fd) + "/" + base
	err = unix.Lsetxattr(p, key, []byte(val), 0)
	if err != nil && !required && (errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("set xattr %s: %w", key, err)
	}
	return nil
}

// finish sets the directories' modes and times, after everything in them
// was created (which moves a directory's mtime, and a mode such as 0555
// would refuse the creates to anyone but root).
func (u *unpacker) finish() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		fd, base, err := u.parent(d.name)
		if err != nil {
			return err
		}
		if err := unix.Fchmodat(fd, base, uint32(d.h.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("chmod %s: %w", d.name, err)
		}
		if err := u.setTimes(d.name, d.h); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
	}
	return nil
}
