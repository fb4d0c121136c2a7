// Package manifest describes a directory tree as sorted text lines (path,
// type, permission bits, size, and the SHA-256 of each regular file or the
// target of each symlink), so two trees can be compared exactly: the rootfs
// a host built an image from and the /rom a device mounted, or /rom and the
// merged root after a factory reset.
//
// Walk leaves out ownership, extended attributes and hard links (squashfs
// images made from a directory own everything as root). WalkFull adds them
// to each line: owner uid:gid, every extended attribute (name and hex
// value, sorted by name), and the hard-link group of each non-directory
// that shares its inode with another path of the walk, named by the
// group's smallest path, so two trees with the same link structure compare
// equal. Timestamps are never part of a line: they are not content.
package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// inode names a file across hard links.
type inode struct{ dev, ino uint64 }

// stat is what WalkFull needs beyond fs.FileInfo.
type stat struct {
	uid, gid uint32
	nlink    uint64
	inode    inode
}

// Entry is one path of a tree.
type Entry struct {
	Path string // slash-separated, relative to the root, "." for the root itself
	Type string // dir, file, symlink, char, block, fifo, socket
	Perm uint32 // permission bits including setuid, setgid, sticky
	Size int64  // regular files only
	Hash string // sha256 hex of a regular file; target of a symlink

	// Ext, when not nil (WalkFull, FromTar), adds owner, extended
	// attributes and hard-link group to the line.
	Ext *Ext
}

// Ext is what WalkFull adds to an entry.
type Ext struct {
	UID, GID uint32
	Xattrs   []Xattr // sorted by name
	Link     string  // smallest path of its hard-link group; "" when alone
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Line is the canonical text form of an entry. With Ext:
//
//	PATH TYPE PERM SIZE HASH owner=UID:GID link=GROUP xattrs=NAME=HEX,...
//
// with "-" for no link group and no extended attributes.
func (e Entry) Line() string {
	l := fmt.Sprintf("%s %s %04o %d %s", quote(e.Path), e.Type, e.Perm, e.Size, quote(e.Hash))
	if x := e.Ext; x != nil {
		xs := make([]string, len(x.Xattrs))
		for i, a := range x.Xattrs {
			xs[i] = a.Name + "=" + hex.EncodeToString(a.Value)
		}
		l += fmt.Sprintf(" owner=%d:%d link=%s xattrs=%s", x.UID, x.GID, quote(x.Link), quote(strings.Join(xs, ",")))
	}
	return l
}

// quote keeps one entry per line whatever the name holds.
func quote(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsAny(s, " \t\n\\\"") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// Walk describes every path under root (root included), sorted by path.
// skip, if not nil, names relative paths whose subtree is left out.
func Walk(root string, skip func(rel string) bool) ([]Entry, error) {
	return walk(root, skip, false)
}

// WalkFull is Walk with owners, extended attributes and hard-link groups
// (Ext) in every entry. Extended attributes are read as they are listed,
// none left out: an overlayfs merged view must never show its own
// trusted.overlay.* or user.overlay.* attributes, and if it does a
// comparison should see them.
func WalkFull(root string, skip func(rel string) bool) ([]Entry, error) {
	return walk(root, skip, true)
}

func walk(root string, skip func(rel string) bool, full bool) ([]Entry, error) {
	var out []Entry
	groups := map[inode][]int{} // non-directories with more than one link
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if skip != nil && rel != "." && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := Entry{Path: rel, Perm: uint32(fi.Mode().Perm())}
		if fi.Mode()&fs.ModeSetuid != 0 {
			e.Perm |= 0o4000
		}
		if fi.Mode()&fs.ModeSetgid != 0 {
			e.Perm |= 0o2000
		}
		if fi.Mode()&fs.ModeSticky != 0 {
			e.Perm |= 0o1000
		}
		switch m := fi.Mode(); {
		case m.IsDir():
			e.Type = "dir"
		case m.IsRegular():
			e.Type = "file"
			e.Size = fi.Size()
			if e.Hash, err = hashFile(p); err != nil {
				return err
			}
		case m&fs.ModeSymlink != 0:
			e.Type = "symlink"
			if e.Hash, err = os.Readlink(p); err != nil {
				return err
			}
		case m&fs.ModeCharDevice != 0:
			e.Type = "char"
		case m&fs.ModeDevice != 0:
			e.Type = "block"
		case m&fs.ModeNamedPipe != 0:
			e.Type = "fifo"
		case m&fs.ModeSocket != 0:
			e.Type = "socket"
		default:
			e.Type = "other"
		}
		if full {
			st, err := statOf(p, fi)
			if err != nil {
				return err
			}
			e.Ext = &Ext{UID: st.uid, GID: st.gid}
			if e.Ext.Xattrs, err = xattrs(p); err != nil {
				return err
			}
			if !fi.IsDir() && st.nlink > 1 {
				groups[st.inode] = append(groups[st.inode], len(out))
			}
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", root, err)
	}
	for _, idx := range groups {
		linkGroup(out, idx)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// linkGroup names the entries out[idx] (one inode) by their smallest path;
// an inode seen once (its other links outside the walk) is no group.
func linkGroup(out []Entry, idx []int) {
	if len(idx) < 2 {
		return
	}
	least := out[idx[0]].Path
	for _, i := range idx {
		least = min(least, out[i].Path)
	}
	for _, i := range idx {
		out[i].Ext.Link = least
	}
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Text is the manifest as newline-terminated lines.
func Text(entries []Entry) string {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Line())
		b.WriteByte('\n')
	}
	return b.String()
}

// Digest is the SHA-256 of Text: two trees with the same digest have the
// same manifest.
func Digest(entries []Entry) string {
	sum := sha256.Sum256([]byte(Text(entries)))
	return hex.EncodeToString(sum[:])
}

// Diff lists the lines only in a ("-") and only in b ("+"), ordered by
// path, "-" before "+"; empty when the manifests are equal.
func Diff(a, b []Entry) []string {
	type side struct{ a, b string }
	byPath := map[string]*side{}
	var paths []string
	get := func(p string) *side {
		s, ok := byPath[p]
		if !ok {
			s = &side{}
			byPath[p] = s
			paths = append(paths, p)
		}
		return s
	}
	for _, e := range a {
		get(e.Path).a = e.Line()
	}
	for _, e := range b {
		get(e.Path).b = e.Line()
	}
	sort.Strings(paths)
	var out []string
	for _, p := range paths {
		s := byPath[p]
		if s.a == s.b {
			continue
		}
		if s.a != "" {
			out = append(out, "- "+s.a)
		}
		if s.b != "" {
			out = append(out, "+ "+s.b)
		}
	}
	return out
}
