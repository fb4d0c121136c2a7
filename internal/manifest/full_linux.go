package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"
)

// xattrs lists the extended attributes of p itself (a symlink's own, not
// its target's), sorted by name.
func xattrs(p string) ([]Xattr, error) {
	names, err := listxattr(p)
	if err != nil {
		return nil, err
	}
	var out []Xattr
	for _, n := range names {
		v, err := getxattr(p, n)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the list
		}
		if err != nil {
			return nil, fmt.Errorf("xattr %s of %s: %w", n, p, err)
		}
		out = append(out, Xattr{Name: n, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func listxattr(p string) ([]string, error) {
	for {
		sz, err := unix.Llistxattr(p, nil)
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil // a filesystem without xattrs has none
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
		}
		if sz == 0 {
			return nil, nil
		}
		buf := make([]byte, sz)
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew since the size was asked
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
		}
		var names []string
		for _, b := range bytes.Split(buf[:n], []byte{0}) {
			if len(b) > 0 {
				names = append(names, string(b))
			}
		}
		return names, nil
	}
}

func getxattr(p, name string) ([]byte, error) {
	for {
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, sz)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func statOf(p string, fi fs.FileInfo) (stat, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return stat{}, fmt.Errorf("%s: no owner in %T", p, fi.Sys())
	}
	return stat{uid: st.Uid, gid: st.Gid, nlink: uint64(st.Nlink), inode: inode{uint64(st.Dev), st.Ino}}, nil
}
