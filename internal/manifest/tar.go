package manifest

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// paxXattr is the PAX record prefix GNU tar and bsdtar store extended
// attributes under.
const paxXattr = "SCHILY.xattr."

// FromTar is the WalkFull manifest of the tree a tar stream describes, read
// from its headers and contents, never from an unpacked copy: what a host
// expects a device to hold. It follows tar semantics as an image build
// does: names are made relative ("./a" and "/a" are "a"), the last entry
// of a name wins, a hard link is its target's inode (same type, mode,
// owner, content and attributes; its group named by the smallest path),
// and the directories a name implies but the archive does not list, the
// root included, are root's with mode 0755. Extended attributes come from
// PAX SCHILY.xattr.* records.
func FromTar(r io.Reader) ([]Entry, error) {
	type node struct {
		e     Entry
		hdr   *tar.Header
		links string // hard-link target name, for TypeLink
	}
	final := map[string]*node{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("manifest of tar: %w", err)
		}
		name := cleanTarName(h.Name)
		n := &node{hdr: h, e: Entry{Path: name, Perm: uint32(h.Mode & 0o7777), Ext: &Ext{UID: uint32(h.Uid), GID: uint32(h.Gid)}}}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, paxXattr) {
				n.e.Ext.Xattrs = append(n.e.Ext.Xattrs, Xattr{Name: strings.TrimPrefix(k, paxXattr), Value: []byte(v)})
			}
		}
		sort.Slice(n.e.Ext.Xattrs, func(i, j int) bool { return n.e.Ext.Xattrs[i].Name < n.e.Ext.Xattrs[j].Name })
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			n.e.Type = "file"
			hs := sha256.New()
			size, err := io.Copy(hs, tr)
			if err != nil {
				return nil, fmt.Errorf("manifest of tar entry %q: %w", h.Name, err)
			}
			n.e.Size, n.e.Hash = size, hex.EncodeToString(hs.Sum(nil))
		case tar.TypeDir:
			n.e.Type = "dir"
		case tar.TypeSymlink:
			n.e.Type, n.e.Perm, n.e.Hash = "symlink", 0o777, h.Linkname
		case tar.TypeChar:
			n.e.Type = "char"
		case tar.TypeBlock:
			n.e.Type = "block"
		case tar.TypeFifo:
			n.e.Type = "fifo"
		case tar.TypeLink:
			n.links = cleanTarName(h.Linkname)
		default:
			continue // pax globals, GNU long names: read by archive/tar itself
		}
		// A directory entry over an existing directory updates it; any
		// other entry replaces what had the name.
		final[name] = n
	}
	// Hard links take their target's inode, following links to links.
	group := map[string][]string{} // inode's first non-link name -> link names
	for name, n := range final {
		if n.links == "" {
			continue
		}
		t, seen := n, 0
		for t != nil && t.links != "" && seen <= len(final) {
			t, seen = final[t.links], seen+1
		}
		if t == nil || t.links != "" || t.e.Type == "dir" {
			return nil, fmt.Errorf("manifest of tar: hard link %q to %q, which is not a file earlier in the archive", n.hdr.Name, n.hdr.Linkname)
		}
		group[t.e.Path] = append(group[t.e.Path], name)
	}
	for target, names := range group {
		t := final[target]
		least := target
		for _, name := range names {
			least = min(least, name)
		}
		t.e.Ext.Link = least
		for _, name := range names {
			e := t.e
			e.Path = name
			ext := *t.e.Ext
			e.Ext = &ext
			final[name].e = e
		}
	}
	// Implied directories, the root included.
	for name := range final {
		for d := name; d != "."; {
			d = path.Dir(d)
			if final[d] == nil {
				final[d] = &node{e: Entry{Path: d, Type: "dir", Perm: 0o755, Ext: &Ext{}}}
			}
		}
	}
	if final["."] == nil {
		final["."] = &node{e: Entry{Path: ".", Type: "dir", Perm: 0o755, Ext: &Ext{}}}
	}
	out := make([]Entry, 0, len(final))
	for _, n := range final {
		out = append(out, n.e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// cleanTarName makes a tar name relative to the root, "." for the root.
func cleanTarName(name string) string {
	n := strings.TrimPrefix(path.Clean("/"+name), "/")
	if n == "" {
		return "."
	}
	return n
}
