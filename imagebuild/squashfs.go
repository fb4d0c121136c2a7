package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// MakeSquashfs makes a squashfs image of a directory or a tarball with
// mksquashfs, without root. It returns the number of entries (the root
// directory included).
//
// A directory is stored with everything owned by root (-all-root) and its
// modes as on disk. A tarball is unpacked as the current user and what a
// user cannot create (owners, setuid bits, device nodes, fifos) is handed to
// mksquashfs as pseudo-file definitions (mksquashfs(1), "Pseudo file
// definition format"), so the image holds what the tarball says.
//
// adds are host files added to the root unless it has them (Addition).
func MakeSquashfs(ctx context.Context, rootfs, out, compression string, adds ...Addition) (int, error) {
	if compression == "" {
		compression = "gzip"
	}
	fi, err := os.Stat(rootfs)
	if err != nil {
		return 0, fmt.Errorf("rootfs: %w", err)
	}
	args := []string{"-noappend", "-no-progress", "-quiet", "-comp", compression,
		// Reproducible: the superblock time is fixed; file times are the source's.
		"-mkfs-time", "0"}
	src := rootfs
	var entries int
	if fi.IsDir() {
		if entries, err = checkReadable(rootfs); err != nil {
			return 0, err
		}
		args = append(args, "-all-root")
		// The mount points the init moves /rom and /overlay to: when the
		// rootfs lacks them they are added here, so the init never has to
		// create them in the upper (where a factory reset would not find
		// an empty upper).
		for _, m := range mountPoints {
			if _, err := os.Lstat(filepath.Join(rootfs, m)); errors.Is(err, fs.ErrNotExist) {
				// D: with a timestamp; "d" would take the build's clock.
				args = append(args, "-p", "/"+m+" D 0 755 0 0")
				entries++
			}
		}
	} else {
		tmp, err := os.MkdirTemp("", "ovroot-rootfs-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(tmp)
		src = filepath.Join(tmp, "root")
		pseudo, n, err := unpackTarball(rootfs, src)
		if err != nil {
			return 0, err
		}
		entries = n
		pf := filepath.Join(tmp, "pseudo")
		if err := os.WriteFile(pf, []byte(strings.Join(pseudo, "\n")+"\n"), 0o644); err != nil {
			return 0, err
		}
		args = append(args, "-pf", pf)
	}
	extra, n, err := additionArgs(src, adds)
	if err != nil {
		return 0, err
	}
	args, entries = append(args, extra...), entries+n
	cmd := exec.CommandContext(ctx, "mksquashfs", append([]string{src, out}, args...)...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return 0, fmt.Errorf("mksquashfs not found (Debian package squashfs-tools): %w", err)
		}
		return 0, fmt.Errorf("mksquashfs %s: %w\n%s", rootfs, err, strings.TrimSpace(output.String()))
	}
	return entries, nil
}

// checkReadable counts the entries of a directory tree and refuses one
// with entries mksquashfs could not read (it would stop half-way, or skip
// them).
func checkReadable(root string) (int, error) {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("rootfs entry %s: %w", p, err)
		}
		n++
		if d.Type().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("rootfs entry %s cannot be read: %w", p, err)
			}
			f.Close()
		}
		return nil
	})
	return n, err
}

// mountPoints are directories every image's root gets (layout.RomDir and
// layout.OverlayDir without the slash).
var mountPoints = []string{strings.TrimPrefix(layout.RomDir, "/"), strings.TrimPrefix(layout.OverlayDir, "/")}

// entry is one tar header, made safe: a clean relative name.
type entry struct {
	hdr  *tar.Header
	name string // relative, clean, never ".." or absolute
}

// cleanName makes a tar entry name relative to the root: leading "/" and
// "./" are normal in tarballs; anything that climbs out of the root is an
// error.
func cleanName(name string) (string, error) {
	n := path.Clean("/" + name)
	if strings.Contains(name, "..") {
		for _, part := range strings.Split(name, "/") {
			if part == ".." {
				return "", fmt.Errorf("tar entry %q climbs out of the root (..)", name)
			}
		}
	}
	return strings.TrimPrefix(n, "/"), nil
}

// pseudoName escapes a name for a pseudo file (spaces and backslashes are
// backslash-escaped: pseudo files take no quotes).
func pseudoName(rel string) string {
	var b strings.Builder
	b.WriteByte('/')
	for _, r := range rel {
		if r == ' ' || r == '\\' || r == '\t' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// pseudoLines says, for one entry, what mksquashfs must set or create that
// an unprivileged unpack cannot: owner, group and full mode for files,
// directories and symlinks ("m", which keeps the unpacked entry's time,
// set from the tar), whole definitions for devices and fifos (the
// timestamped forms C, B, I: the plain ones take the build's clock, and the
// same tarball must give the same image). mksquashfs 4.5.1 ignores "M" on
// directories, hence "m" and times set on disk.
func pseudoLines(e entry) []string {
	h := e.hdr
	name := pseudoName(e.name)
	if e.name == "" {
		name = "/"
	}
	mode := h.Mode & 0o7777
	ts := max(h.ModTime.Unix(), 0)
	switch h.Typeflag {
	case tar.TypeChar:
		return []string{fmt.Sprintf("%s C %d %o %d %d %d %d", name, ts, mode, h.Uid, h.Gid, h.Devmajor, h.Devminor)}
	case tar.TypeBlock:
		return []string{fmt.Sprintf("%s B %d %o %d %d %d %d", name, ts, mode, h.Uid, h.Gid, h.Devmajor, h.Devminor)}
	case tar.TypeFifo:
		return []string{fmt.Sprintf("%s I %d %o %d %d f", name, ts, mode, h.Uid, h.Gid)}
	case tar.TypeSymlink:
		return []string{fmt.Sprintf("%s m %o %d %d", name, 0o777, h.Uid, h.Gid)}
	case tar.TypeLink:
		return nil // shares the target's inode and its modify line
	}
	return []string{fmt.Sprintf("%s m %o %d %d", name, mode, h.Uid, h.Gid)}
}

// readTar reads every header of a tarball (gzip detected by magic), keeping
// the last entry of each name (tar semantics) and the order of first
// appearance. Content of regular files is handed to keep.
func readTar(r io.Reader, keep func(e entry, content io.Reader) error) ([]entry, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer gz.Close()
		r = gz
	} else {
		r = br
	}
	tr := tar.NewReader(r)
	var order []entry
	index := map[string]int{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			where := "at the start"
			if len(order) > 0 {
				where = fmt.Sprintf("after entry %q", order[len(order)-1].hdr.Name)
			}
			return nil, fmt.Errorf("not a valid tar archive (%s): %w", where, err)
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return nil, err
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		case tar.TypeXGlobalHeader:
			continue
		default:
			return nil, fmt.Errorf("tar entry %q: unsupported type %q", h.Name, string(h.Typeflag))
		}
		if h.Typeflag == tar.TypeLink {
			target, err := cleanName(h.Linkname)
			if err != nil {
				return nil, err
			}
			if _, ok := index[target]; !ok {
				return nil, fmt.Errorf("tar entry %q: hard link to %q, which is not earlier in the archive", h.Name, h.Linkname)
			}
			h.Linkname = target
		}
		e := entry{hdr: h, name: name}
		if h.Typeflag == tar.TypeReg {
			if err := keep(e, tr); err != nil {
				return nil, fmt.Errorf("tar entry %q: %w", h.Name, err)
			}
		}
		if i, ok := index[name]; ok {
			order[i] = e
			continue
		}
		index[name] = len(order)
		order = append(order, e)
	}
	if len(order) == 0 {
		return nil, errors.New("empty tar archive")
	}
	return order, nil
}

// unpackTarball unpacks into dir as the current user and returns the
// pseudo-file lines and the entry count (the root included).
func unpackTarball(tarball, dir string) ([]string, int, error) {
	f, err := os.Open(tarball)
	if err != nil {
		return nil, 0, fmt.Errorf("rootfs: %w", err)
	}
	defer f.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, 0, err
	}
	// Directories exist before their files whatever the archive's order.
	mkparents := func(rel string) error { return os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755) }
	entries, err := readTar(f, func(e entry, content io.Reader) error {
		if err := mkparents(e.name); err != nil {
			return err
		}
		p := filepath.Join(dir, e.name)
		os.RemoveAll(p)
		// Readable by us whatever its mode: the pseudo file sets the real one.
		out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, content); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("rootfs tarball %s: %w", tarball, err)
	}
	var pseudo []string
	haveRoot := false
	// Hard links last, so their targets exist.
	sort.SliceStable(entries, func(i, j int) bool {
		return entries[i].hdr.Typeflag != tar.TypeLink && entries[j].hdr.Typeflag == tar.TypeLink
	})
	for _, e := range entries {
		h := e.hdr
		p := filepath.Join(dir, e.name)
		if e.name == "" {
			haveRoot = true
		} else if err := mkparents(e.name); err != nil {
			return nil, 0, err
		}
		var err error
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			os.RemoveAll(p)
			err = os.Symlink(h.Linkname, p)
		case tar.TypeLink:
			os.RemoveAll(p)
			err = os.Link(filepath.Join(dir, h.Linkname), p)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("rootfs tarball %s: entry %q: %w", tarball, h.Name, err)
		}
		pseudo = append(pseudo, pseudoLines(e)...)
	}

	if !haveRoot {
		pseudo = append([]string{"/ m 755 0 0"}, pseudo...)
	}
	for _, m := range mountPoints { // see MakeSquashfs
		if err := os.MkdirAll(filepath.Join(dir, m), 0o755); err != nil {
			return nil, 0, err
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
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		rel, _ := filepath.Rel(dir, p)
		if rel = filepath.ToSlash(rel); rel != "." && d.IsDir() && !named[rel] {
			pseudo = append(pseudo, pseudoName(rel)+" m 755 0 0")
			implied = append(implied, p)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	// Times last (creating entries touches their directories), so the same
	// tarball gives the same image: the tar's for what it lists, the epoch
	// for the directories it only implies and the mount points.
	epoch := time.Unix(0, 0)
	for _, p := range implied {
		setTime(p, epoch)
	}
	if !haveRoot {
		setTime(dir, epoch)
	}
	for _, e := range entries {
		switch e.hdr.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink:
			setTime(filepath.Join(dir, e.name), e.hdr.ModTime)
		}
	}
	return pseudo, n, nil
}

// setTime sets the access and modification times of p, a symlink itself
// rather than its target.
func setTime(p string, t time.Time) {
	ts := unix.NsecToTimespec(t.UnixNano())
	unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
