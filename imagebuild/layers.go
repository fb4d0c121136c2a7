package imagebuild

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ovroot/ovroot/backup"
	"golang.org/x/sys/unix"
)

// tarLayer is one tar stream of a rootfs. A plain tarball is a sequence of
// one layer; a container image is its layers, bottom first, applied in
// order into one tree (the OCI image spec's "Applying Changesets").
type tarLayer struct {
	// name says which layer in errors ("" for a plain tarball, whose
	// errors the caller names).
	name string
	// whiteouts makes .wh. entries OCI whiteouts (image layers), not
	// files: a plain tarball is stored as it is.
	whiteouts bool
	// keepWhiteouts (with whiteouts) keeps them for overlayfs instead of
	// applying them: the layer is a stacked layer of the device's root
	// ([[layer]]), whose whiteouts hide what the layers below it hold
	// there. .wh.NAME becomes NAME, a 0/0 character device; .wh..wh..opq
	// marks its directory opaque (trusted.overlay.opaque=y).
	keepWhiteouts bool
	// implied, when set, collects the directories the tarball implies
	// but does not list (stored as root's, 0755).
	implied *[]string
	// open returns the layer's uncompressed tar stream and finish, which
	// closes it: once the tar has been read to its end (complete), for an
	// image layer it reads what is left and checks the layer's digests.
	open func(ctx context.Context) (r io.Reader, finish func(complete bool) error, err error)
}

// readerLayer is a plain tarball (gzip, xz, zstd or bzip2 detected by
// magic) as a layer.
func readerLayer(r io.Reader) tarLayer {
	return tarLayer{open: func(context.Context) (io.Reader, func(bool) error, error) {
		d, done, err := decompress(r)
		if err != nil {
			return nil, nil, err
		}
		closed := false
		return d, func(bool) error {
			if !closed {
				closed = true
				done()
			}
			return nil
		}, nil
	}}
}

// fileLayer is a tarball file (compressed or not, detected by magic) as a
// layer named name; with whiteouts, an OCI layer (a --layer, as
// ovrootctl backup writes them).
func fileLayer(name, p string, whiteouts bool) tarLayer {
	return tarLayer{name: name, whiteouts: whiteouts, open: func(context.Context) (io.Reader, func(bool) error, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, nil, err
		}
		d, done, err := decompress(f)
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		closed := false
		return d, func(bool) error {
			if !closed {
				closed = true
				done()
				f.Close()
			}
			return nil
		}, nil
	}}
}

// dirLayer is a directory rootfs as the bottom layer of a build with
// layers on top. Layers are applied by unpacking (unpackLayers), and the
// directory must stay as it is, so it is read as a tar stream, written by
// package backup's walker (which the host shares with ovrootctl backup)
// and stored as a directory rootfs is without layers: every entry owned
// by root (mksquashfs -all-root), modes, times, hard links and xattrs as
// on disk. The walker's second pass fails the build if the directory
// changes while it is read. Unlike mksquashfs of the directory, a socket
// is left out and a character device 0/0 is taken as a whiteout (it is
// one in an overlayfs upper).
func dirLayer(dir string) tarLayer {
	return tarLayer{name: "rootfs directory " + dir, whiteouts: true, open: func(context.Context) (io.Reader, func(bool) error, error) {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			err := backup.Write(pw, dir, backup.Options{RootOwned: true, Root: true})
			pw.CloseWithError(err)
			done <- err
		}()
		finished := false
		var result error
		return pr, func(complete bool) error {
			if finished {
				return result
			}
			finished = true
			if complete {
				// The walker checks the tree again after the archive's end.
				io.Copy(io.Discard, pr)
			}
			pr.CloseWithError(errors.New("the build stopped reading the rootfs directory"))
			if err := <-done; complete && err != nil {
				result = fmt.Errorf("read the rootfs directory: %w", err)
			}
			return result
		}, nil
	}}
}

// OCI whiteouts (image-spec layer.md, "Whiteouts"): .wh.NAME hides NAME of
// the lower layers, .wh..wh..opq hides everything the lower layers put in
// its directory. Other .wh..wh. names are aufs's bookkeeping, not files.
// The names are package backup's, which writes such layers.
const (
	overlayOpaque  = backup.OverlayOpaque
	whiteoutPrefix = backup.WhiteoutPrefix
	whiteoutMeta   = backup.WhiteoutMeta
	whiteoutOpaque = backup.WhiteoutOpaque
)

// merger is the merged view of the layers read so far: the last entry of
// each name (tar semantics inside a layer, the upper layer winning across
// layers), in the order of first appearance.
type merger struct {
	order []entry // removed entries have a nil hdr
	index map[string]int
	seq   int
	// content maps a hard link's seq, and a regular file's, to the
	// regular entry whose bytes it shares: an inode outlives the name it
	// was first linked under, as in tar extraction and overlayfs.
	content map[int]entry
	// kids lists the names ever put directly below each directory,
	// implied ones included, so a whiteout walks only what it removes.
	kids map[string][]string
	// opaque lists the directories a kept .wh..wh..opq marks, and where.
	opaque map[string]string
}

// mergeLayers reads every layer in order and returns the merged entries.
// Content of regular files is handed to keep.
func mergeLayers(ctx context.Context, layers []tarLayer, keep func(e entry, content io.Reader) error) ([]entry, map[int]entry, error) {
	m := &merger{index: map[string]int{}, content: map[int]entry{}, kids: map[string][]string{}}
	for i, l := range layers {
		if err := m.read(ctx, i, l, keep); err != nil {
			if l.name != "" {
				return nil, nil, fmt.Errorf("%s: %w", l.name, err)
			}
			return nil, nil, err
		}
	}
	for dir, marker := range m.opaque {
		i, ok := m.index[dir]
		if !ok || m.order[i].hdr.Typeflag != tar.TypeDir {
			return nil, nil, fmt.Errorf("tar entry %q marks %q opaque, which the layer does not hold as a directory", marker, "/"+dir)
		}
		m.order[i].opaque = true
	}
	var out []entry
	for _, e := range m.order {
		if e.hdr != nil {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, nil, errors.New("empty tar archive")
	}
	return out, m.content, nil
}

func (m *merger) read(ctx context.Context, layer int, l tarLayer, keep func(e entry, content io.Reader) error) error {
	r, finish, err := l.open(ctx)
	if err != nil {
		return err
	}
	defer finish(false) // after finish(true), a no-op
	tr := tar.NewReader(r)
	last := ""
	for pos := 0; ; pos++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			where := "at the start"
			if last != "" {
				where = fmt.Sprintf("after entry %q", last)
			}
			return fmt.Errorf("not a valid tar archive (%s): %w", where, err)
		}
		last = h.Name
		name, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo, tar.TypeGNUSparse:
		case tar.TypeXGlobalHeader:
			continue
		default:
			return fmt.Errorf("tar entry %q: unsupported type %q", h.Name, string(h.Typeflag))
		}
		if l.keepWhiteouts {
			var skip bool
			if name, skip, err = m.keepWhiteout(name, h); err != nil {
				return err
			} else if skip {
				continue
			}
		} else if l.whiteouts {
			if done, err := m.whiteout(layer, name, h); done || err != nil {
				if err != nil {
					return err
				}
				continue
			}
		}
		if name == "" && h.Typeflag != tar.TypeDir {
			return fmt.Errorf("tar entry %q names the root, which must be a directory, as a %q entry", h.Name, string(h.Typeflag))
		}
		e := entry{hdr: h, name: name, layer: layer, seq: m.seq, pos: pos}
		m.seq++
		if h.Typeflag == tar.TypeLink {
			target, err := cleanName(h.Linkname)
			if err != nil {
				return err
			}
			i, ok := m.index[target]
			if !ok {
				return fmt.Errorf("tar entry %q: hard link to %q, which is not earlier in the archive", h.Name, h.Linkname)
			}
			h.Linkname = target
			if c, ok := m.content[m.order[i].seq]; ok {
				m.content[e.seq] = c
			}
		}
		if e.regular() && h.Size > maxEntrySize {
			return fmt.Errorf("tar entry %q: %d bytes is larger than a rootfs file may be (%d bytes)", h.Name, h.Size, maxEntrySize)
		}
		if e.regular() {
			m.content[e.seq] = e
			if err := keep(e, tr); err != nil {
				return fmt.Errorf("tar entry %q: %w", h.Name, err)
			}
		}
		// An upper layer's non-directory hides what the lower layers
		// had below that name (overlayfs: it is not merged).
		if h.Typeflag != tar.TypeDir {
			m.remove(name, layer, false)
		}
		if i, ok := m.index[name]; ok {
			m.order[i] = e
			continue
		}
		m.index[name] = len(m.order)
		m.order = append(m.order, e)
		m.addKid(name)
	}
	return finish(true)
}

// A layer entry's name, as OCI whiteouts read it (parseWhiteout).
type whiteoutKind int

const (
	notWhiteout         whiteoutKind = iota
	whiteoutName                     // .wh.NAME: hides NAME of the lower layers
	whiteoutDir                      // .wh..wh..opq: hides what they put in its directory
	whiteoutBookkeeping              // another .wh..wh. name: aufs's, not part of the tree
)

// parseWhiteout reads a clean entry name as a whiteout: its kind, its
// directory and, for whiteoutName, the name it hides, which must be one.
func parseWhiteout(name string, h *tar.Header) (kind whiteoutKind, dir, hidden string, err error) {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case !strings.HasPrefix(base, whiteoutPrefix):
		return notWhiteout, dir, "", nil
	case base == whiteoutOpaque:
		return whiteoutDir, dir, "", nil
	case strings.HasPrefix(base, whiteoutMeta):
		return whiteoutBookkeeping, dir, "", nil
	}
	hidden = strings.TrimPrefix(base, whiteoutPrefix)
	if hidden == "." || hidden == ".." || hidden == "" {
		return 0, "", "", fmt.Errorf("tar entry %q: a whiteout of %q", h.Name, hidden)
	}
	return whiteoutName, dir, hidden, nil
}

// whiteout applies a whiteout entry of an image layer, reporting whether
// the entry was one (it is then not part of the image).
func (m *merger) whiteout(layer int, name string, h *tar.Header) (bool, error) {
	kind, dir, hidden, err := parseWhiteout(name, h)
	switch kind {
	case whiteoutDir:
		m.remove(dir, layer, false)
	case whiteoutName:
		m.remove(path.Join(dir, hidden), layer, true)
	}
	return kind != notWhiteout, err
}

// keepWhiteout turns a whiteout entry of a stacked layer into what
// overlayfs reads as one (see tarLayer.keepWhiteouts): it returns the
// entry's new name, or skip for an entry that is not part of the tree (an
// opaque marker, recorded for its directory; aufs's bookkeeping).
func (m *merger) keepWhiteout(name string, h *tar.Header) (string, bool, error) {
	kind, dir, hidden, err := parseWhiteout(name, h)
	switch {
	case err != nil:
		return "", false, err
	case kind == notWhiteout:
		return name, false, nil
	case kind == whiteoutDir:
		if m.opaque == nil {
			m.opaque = map[string]string{}
		}
		m.opaque[dir] = h.Name
		return "", true, nil
	case kind == whiteoutBookkeeping:
		return "", true, nil
	}
	// overlayfs's whiteout: a character device 0/0, owned by root.
	*h = tar.Header{Name: path.Join(dir, hidden), Typeflag: tar.TypeChar, ModTime: h.ModTime, Format: h.Format}
	return h.Name, false, nil
}

// addKid records name below its parents, up to the root.
func (m *merger) addKid(name string) {
	for name != "" {
		parent := path.Dir(name)
		if parent == "." {
			parent = ""
		}
		had := m.kids[parent] != nil
		m.kids[parent] = append(m.kids[parent], name)
		if had {
			return // parent was recorded below its own parents then
		}
		name = parent
	}
}

// remove drops the entries of lower layers below dir (and dir itself when
// self): whiteouts apply to the lower layers only, never to their own.
func (m *merger) remove(dir string, layer int, self bool) {
	if layer == 0 {
		return
	}
	var todo []string
	if self {
		todo = append(todo, dir)
	} else {
		todo = append(todo, m.kids[dir]...)
	}
	seen := map[string]bool{}
	for len(todo) > 0 {
		n := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[n] {
			continue
		}
		seen[n] = true
		if i, ok := m.index[n]; ok && m.order[i].layer < layer {
			m.order[i].hdr = nil
			delete(m.index, n)
		}
		todo = append(todo, m.kids[n]...)
	}
}

// unpack unpacks a tar stream into dir (created) as the current user.
func unpack(ctx context.Context, r io.Reader, dir string) ([]string, int, error) {
	return unpackLayers(ctx, []tarLayer{readerLayer(r)}, dir)
}

// unpackLayers applies layers in order into dir (created) as the current
// user and returns the pseudo-file lines and the entry count (the root
// included). File contents are first written aside, in a directory next to
// dir; nothing is created in dir before the merged entries are known and
// checked (checkTree). Every create, link, rename and time change then
// goes through an os.Root opened on dir (or a directory opened through
// it), so no entry, whatever symlinks the archive holds, reaches outside
// it; symlinks are stored as they are and never followed.
func unpackLayers(ctx context.Context, layers []tarLayer, dir string) ([]string, int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, 0, err
	}
	defer root.Close()
	// Contents wait in a directory of the root (the same filesystem, so
	// they are renamed into place), under a name no entry has; it is
	// gone before the tree is counted and its times set.
	store, err := storeName(nil)
	if err != nil {
		return nil, 0, err
	}
	if err := root.Mkdir(store, 0o700); err != nil {
		return nil, 0, err
	}
	defer func() { root.RemoveAll(store) }()
	sdir, err := root.Open(store)
	if err != nil {
		return nil, 0, err
	}
	defer sdir.Close()
	entries, content, err := mergeLayers(ctx, layers, func(e entry, r io.Reader) error {
		// Readable by us whatever its mode: the pseudo file sets the real
		// one. A number in the store's descriptor, created (O_EXCL) and
		// never followed: one syscall, where the Root walked it again.
		fd, err := unix.Openat(int(sdir.Fd()), strconv.Itoa(e.seq), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return &os.PathError{Op: "create", Path: strconv.Itoa(e.seq), Err: err}
		}
		out := os.NewFile(uintptr(fd), strconv.Itoa(e.seq))
		if err := copySparse(ctx, out, r); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		return nil, 0, err
	}
	if err := checkTree(entries); err != nil {
		return nil, 0, err
	}
	if storeClash(entries, store) {
		name, err := storeName(entries)
		if err != nil {
			return nil, 0, err
		}
		if err := root.Rename(store, name); err != nil {
			return nil, 0, err
		}
		store = name
	}
	entries = placeContent(entries, content)
	td, err := newTreeDirs(root)
	if err != nil {
		return nil, 0, err
	}
	defer td.close()
	// Directories exist before their files whatever the archive's order.
	mkparents := func(rel string) error {
		if d := path.Dir(rel); d != "." {
			_, err := td.dir(d, true)
			return err
		}
		return nil
	}
	// replace clears the way for a new entry at rel.
	replace := func(rel string) error {
		found, err := td.exists(rel)
		if err != nil || !found {
			return err
		}
		td.forget(rel)
		return root.RemoveAll(rel)
	}
	var pseudo []string
	haveRoot := false
	// Hard links last, so their targets exist.
	sort.SliceStable(entries, func(i, j int) bool {
		return entries[i].hdr.Typeflag != tar.TypeLink && entries[j].hdr.Typeflag == tar.TypeLink
	})
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		td.trim()
		h := e.hdr
		if e.name == "" {
			haveRoot = true
		} else if err := mkparents(e.name); err != nil {
			return nil, 0, fmt.Errorf("entry %q: %w", h.Name, err)
		}
		var err error
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			if err = replace(e.name); err == nil {
				err = td.inParent(e.name, func(fd int, base string) error {
					return unix.Renameat(int(sdir.Fd()), strconv.Itoa(e.seq), fd, base)
				})
			}
		case tar.TypeDir:
			if e.name == "" {
				break
			}
			err = td.inParent(e.name, func(fd int, base string) error {
				var st unix.Stat_t
				if unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
					return unix.Unlinkat(fd, base, 0)
				}
				return nil
			})
			if err == nil {
				_, err = td.dir(e.name, true)
			}
		case tar.TypeSymlink:
			if err = replace(e.name); err == nil {
				err = td.inParent(e.name, func(fd int, base string) error {
					return unix.Symlinkat(h.Linkname, fd, base)
				})
			}
		case tar.TypeLink:
			if err = replace(e.name); err == nil {
				err = td.inParent(h.Linkname, func(ofd int, obase string) error {
					return td.inParent(e.name, func(fd int, base string) error {
						// No AT_SYMLINK_FOLLOW: a link to a symlink links
						// the symlink itself.
						return unix.Linkat(ofd, obase, fd, base, 0)
					})
				})
			}
		}
		if err == nil {
			err = setXattrs(td, e)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("entry %q: %w", h.Name, err)
		}
		pseudo = append(pseudo, pseudoLines(e)...)
	}

	if err := root.RemoveAll(store); err != nil {
		return nil, 0, err
	}
	if !haveRoot {
		pseudo = append([]string{"/ m 755 0 0"}, pseudo...)
	}
	for _, m := range mountPoints { // see MakeSquashfs
		if _, err := root.Lstat(m); errors.Is(err, fs.ErrNotExist) {
			if err := root.Mkdir(m, 0o755); err != nil {
				return nil, 0, err
			}
		}
	}
	// Directories the archive implies but does not list (a/b of "a/b/c")
	// are root's, 0755, as tar would make them; without a line they would
	// be stored as the unpacking user's.
	named := make(map[string]bool, len(entries))
	n := 0 // entries of the image: what is unpacked, and the pseudo-only nodes
	var implied []string
	for _, e := range entries {
		named[e.name] = true
		switch e.hdr.Typeflag {
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			n++
		}
	}
	err = fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		if rel != "." && d.IsDir() && !named[rel] {
			pseudo = append(pseudo, pseudoName(rel)+" m 755 0 0")
			implied = append(implied, rel)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	if p := layers[len(layers)-1].implied; p != nil {
		*p = append(*p, implied...)
	}
	// Times last (creating entries touches their directories), so the same
	// tarball gives the same image: the tar's for what it lists, the epoch
	// for the directories it only implies and the mount points.
	epoch := time.Unix(0, 0)
	for _, rel := range implied {
		td.trim()
		td.setTime(rel, epoch)
	}
	if !haveRoot {
		td.setTime(".", epoch)
	}
	for _, e := range entries {
		switch e.hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink:
			rel := e.name
			if rel == "" {
				rel = "."
			}
			td.trim()
			td.setTime(rel, e.hdr.ModTime)
		}
	}
	return pseudo, n, nil
}

// storeName picks a name for the directory of contents at the top of the
// root that no entry uses (entries nil: any name, checked later).
func storeName(entries []entry) (string, error) {
	for range 100 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		if name := ".ovroot-content-" + hex.EncodeToString(b[:]); !storeClash(entries, name) {
			return name, nil
		}
	}
	return "", errors.New("no free name for the unpack's contents")
}

func storeClash(entries []entry, name string) bool {
	for _, e := range entries {
		if top, _, _ := strings.Cut(e.name, "/"); top == name {
			return true
		}
	}
	return false
}

// placeContent decides where each regular file's bytes go: to the entry
// that still has them, and every other name sharing them (hard links)
// links to it. When the file a link was made to is gone (a later layer
// removed or replaced it, or a later entry of the same name did), the
// first link left takes its place with the file's header (owner, mode,
// times), as the inode lives on in tar extraction and in overlayfs.
func placeContent(entries []entry, content map[int]entry) []entry {
	holder := map[int]string{} // content seq -> the name that carries it
	for _, e := range entries {
		if e.regular() {
			holder[e.seq] = e.name
		}
	}
	out := make([]entry, len(entries))
	copy(out, entries)
	for i, e := range out {
		if e.hdr.Typeflag != tar.TypeLink {
			continue
		}
		f, ok := content[e.seq]
		if !ok {
			continue // a link to a symlink, a device...: by name
		}
		if name, ok := holder[f.seq]; ok {
			h := *e.hdr
			h.Linkname = name
			out[i].hdr = &h
			continue
		}
		h := *f.hdr
		h.Name = e.hdr.Name
		out[i].hdr = &h
		out[i].seq = f.seq
		holder[f.seq] = e.name
	}
	return out
}

// PAX records carrying extended attributes: star's and GNU tar's (the
// value as it is), bsdtar's (the name URL-encoded, the value base64).
const (
	paxSchilyXattr     = backup.PAXXattr
	paxLibarchiveXattr = "LIBARCHIVE.xattr."
	paxSchilyACL       = "SCHILY.acl."
)

// entryXattrs returns an entry's extended attributes, and refuses PAX
// records that say what we cannot carry (POSIX ACLs in star's text form).
func entryXattrs(h *tar.Header) (map[string]string, error) {
	var x map[string]string
	for k, v := range h.PAXRecords {
		switch {
		case strings.HasPrefix(k, paxSchilyXattr):
			if x == nil {
				x = map[string]string{}
			}
			x[strings.TrimPrefix(k, paxSchilyXattr)] = v
		case strings.HasPrefix(k, paxLibarchiveXattr):
			name, err := url.PathUnescape(strings.TrimPrefix(k, paxLibarchiveXattr))
			if err != nil {
				return nil, fmt.Errorf("PAX record %s: %w", k, err)
			}
			val, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("PAX record %s: %w", k, err)
			}
			if x == nil {
				x = map[string]string{}
			}
			x[name] = string(val)
		case strings.HasPrefix(k, paxSchilyACL):
			return nil, fmt.Errorf("PAX record %s: POSIX ACLs in tar form are not carried; store them as the system.posix_acl_access xattr (tar --xattrs) or drop them (tar --no-acls)", k)
		}
	}
	return x, nil
}

// setXattrs sets an entry's extended attributes on what was unpacked for
// it. mksquashfs 4.5.1 has no pseudo definition for xattrs; it stores those
// of the tree it reads (-xattrs). An attribute that cannot be set
// (security.* or trusted.* when not root, a filesystem without them) is an
// error naming it: an xattr is never dropped.
func setXattrs(td *treeDirs, e entry) error {
	x, err := entryXattrs(e.hdr)
	if err != nil || (len(x) == 0 && !e.opaque) {
		return err
	}
	names := make([]string, 0, len(x))
	for n := range x {
		names = append(names, n)
	}
	sort.Strings(names)
	switch e.hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return fmt.Errorf("xattr %s: a device node or fifo is made by mksquashfs from a pseudo definition, which cannot carry xattrs (mksquashfs 4.5.1)", names[0])
	case tar.TypeLink:
		return nil // the inode's, set through the file it links to
	}
	rel := e.name
	if rel == "" {
		rel = "."
	}
	return td.inParent(rel, func(fd int, base string) error {
		// The parent by descriptor, the last component not followed: no
		// path string reaches outside the root.
		p := "/proc/self/fd/" + strconv.Itoa(fd) + "/" + base
		for _, n := range names {
			if strings.HasPrefix(n, "trusted.overlay.") {
				return fmt.Errorf("xattr %s is overlayfs's own (its whiteouts and opaque directories); it would change what the device's overlay shows", n)
			}
			if err := unix.Lsetxattr(p, n, []byte(x[n]), 0); err != nil {
				return fmt.Errorf("xattr %s cannot be set on the unpacked tree (%w); the image would lack it (security.* and trusted.* need a build as root)", n, err)
			}
		}
		if e.opaque {
			if err := unix.Lsetxattr(p, overlayOpaque, []byte("y"), 0); err != nil {
				return fmt.Errorf("an opaque directory of a stacked layer is the xattr %s, which cannot be set on the unpacked tree (%w): build as root", overlayOpaque, err)
			}
		}
		return nil
	})
}
