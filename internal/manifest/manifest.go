// Package manifest describes a directory tree as sorted text lines (path,
// type, permission bits, size, and the SHA-256 of each regular file or the
// target of each symlink), so two trees can be compared exactly: the rootfs
// a host built an image from and the /rom a device mounted, or /rom and the
// merged root after a factory reset.
//
// Ownership and timestamps are not part of a line: squashfs images made
// rootless own everything as root, and timestamps are not content.
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

// Entry is one path of a tree.
type Entry struct {
	Path string // slash-separated, relative to the root, "." for the root itself
	Type string // dir, file, symlink, char, block, fifo, socket
	Perm uint32 // permission bits including setuid, setgid, sticky
	Size int64  // regular files only
	Hash string // sha256 hex of a regular file; target of a symlink
}

// Line is the canonical text form of an entry.
func (e Entry) Line() string {
	return fmt.Sprintf("%s %s %04o %d %s", quote(e.Path), e.Type, e.Perm, e.Size, quote(e.Hash))
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
	var out []Entry
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
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", root, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
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
