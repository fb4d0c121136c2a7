package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ovroot/ovroot/internal/tmpdir"
	"github.com/ovroot/ovroot/layout"
	"github.com/ulikunitz/xz"
)

// MakeSquashfs makes a squashfs image of a directory or a tarball with
// mksquashfs, without root. It returns the number of entries (the root
// directory included). A container image is refused: MakeSquashfsFor
// takes one, given the arch that picks its image.
func MakeSquashfs(ctx context.Context, rootfs, out, compression string, adds ...Addition) (int, error) {
	n, _, err := MakeSquashfsFor(ctx, rootfs, "", out, compression, adds...)
	return n, err
}

// MakeSquashfsFor makes a squashfs image of a rootfs with mksquashfs,
// without root, and returns the number of entries (the root directory
// included) and what the rootfs was, for the build summary ("directory
// X", "tarball X", "OCI image layout X, linux/arm64, 3 layers,
// sha256:..."). The rootfs is a directory, a tarball, or a container
// image (an OCI image layout, an OCI archive, a docker save tarball: see
// openImage), whose image for arch is taken.
//
// A directory is stored with everything owned by root (-all-root) and its
// modes as on disk. A tarball, or an image's layers applied in order, is
// unpacked as the current user and what a user cannot create (owners,
// setuid bits, device nodes, fifos) is handed to mksquashfs as
// pseudo-file definitions (mksquashfs(1), "Pseudo file definition
// format"), so the image holds what the tarball says; extended attributes
// are set on the unpacked tree, which mksquashfs stores (-xattrs).
//
// Cancelling ctx stops the unpack and kills mksquashfs (and anything it
// started); the temporary tree is removed either way.
// adds are host files added to the root unless it has them (Addition).
func MakeSquashfsFor(ctx context.Context, rootfs string, arch layout.Arch, out, compression string, adds ...Addition) (int, string, error) {
	return makeSquashfs(ctx, rootfs, arch, out, compression, sqOptions{}, adds...)
}

// MakeSquashfsLayers is MakeSquashfsFor with layer tarballs (OCI layers:
// .wh. whiteouts and opaque directories, as ovrootctl backup writes them)
// applied in order on top of the rootfs. With layers, every rootfs is
// unpacked: a tarball or an image as without them, a directory read as the
// bottom layer (see dirLayer; it is never written).
func MakeSquashfsLayers(ctx context.Context, rootfs string, layers []string, arch layout.Arch, out, compression string, adds ...Addition) (int, string, error) {
	return makeSquashfs(ctx, rootfs, arch, out, compression, sqOptions{layers: layers}, adds...)
}

// sqOptions are makeSquashfs's options.
type sqOptions struct {
	// layers are layer tarballs applied on top of the rootfs
	// (MakeSquashfsLayers).
	layers []string
	// keepWhiteouts makes the rootfs a stacked layer above the bottom
	// one ([[layer]]): a tarball's .wh. entries are kept as overlayfs
	// whiteouts (tarLayer.keepWhiteouts); a directory's 0/0 character
	// devices and opaque directories are stored as they are anyway, and
	// it gets no mount points.
	keepWhiteouts bool
	// check is called on the tree mksquashfs will pack (the directory, or
	// what a tarball or an image unpacked to) before it runs: a check that
	// reads the tree costs a lookup there, where reading the tarball or
	// the image's layers again would cost a pass over all of them.
	check func(dir string) error
	// tree, when set, is where a tarball or an image is unpacked (a
	// directory that does not exist yet, in a temporary directory of the
	// caller's, which removes it); "" = a temporary directory of its own.
	tree string
	// implied, with keepWhiteouts, collects the directories a tarball
	// implies but does not list.
	implied *[]string
}

// makeSquashfs is MakeSquashfsLayers with options.
func makeSquashfs(ctx context.Context, rootfs string, arch layout.Arch, out, compression string, o sqOptions, adds ...Addition) (int, string, error) {
	layers, keepWhiteouts, check := o.layers, o.keepWhiteouts, o.check
	if compression == "" {
		compression = "gzip"
	}
	fi, err := os.Stat(rootfs)
	if err != nil {
		return 0, "", fmt.Errorf("rootfs: %w", err)
	}
	// A symlink named as the rootfs is followed, as cp -r, tar -C and
	// mksquashfs itself do with a named argument: given the link,
	// mksquashfs would store the link alone.
	if resolved, err := filepath.EvalSymlinks(rootfs); err == nil {
		rootfs = resolved
	}
	img, err := openImage(ctx, rootfs, arch)
	if err != nil {
		return 0, "", err
	}
	args := []string{"-noappend", "-no-progress", "-quiet", "-comp", compression,
		// Reproducible: the superblock time is fixed; file times are the source's.
		"-mkfs-time", "0",
		// The unpacked tree's xattrs are the archive's (setXattrs); a
		// directory's are its own.
		"-xattrs"}
	src := rootfs
	var entries int
	var desc string
	if fi.IsDir() && img == nil && len(layers) == 0 {
		desc = "directory " + rootfs
		if entries, err = countEntries(ctx, rootfs); err != nil {
			return 0, "", err
		}
		// -all-root does not reach the root directory when the build does
		// not run as root: it would be owned by the building user, who
		// could then rename /sbin on the device's overlay.
		args = append(args, "-all-root")
		args = append(args, rootDirArgs(uint32(fi.Mode().Perm()), 0, 0)...)
		// The mount points the init uses: when the rootfs lacks them they
		// are added here, so the init never has to create them in the
		// upper (where they would show up as changes, and where a factory
		// reset would not find an empty upper).
		for _, m := range mountPoints {
			if keepWhiteouts {
				break // the bottom layer has them
			}
			if _, err := os.Lstat(filepath.Join(rootfs, m)); errors.Is(err, fs.ErrNotExist) {
				// D: with a timestamp; "d" would take the build's clock.
				args = append(args, "-p", "/"+m+" D 0 755 0 0")
				entries++
			}
		}
	} else if !fi.IsDir() && !fi.Mode().IsRegular() && img == nil {
		return 0, "", fmt.Errorf("rootfs %s is neither a directory nor a tarball (%s)", rootfs, fi.Mode().Type())
	} else {
		tmp, done, err := tmpdir.Make("rootfs")
		if err != nil {
			return 0, "", err
		}
		defer done()
		src = filepath.Join(tmp, "root")
		if o.tree != "" {
			src = o.tree
		}
		var pseudo []string
		var base []tarLayer
		switch {
		case img != nil:
			defer img.close()
			desc, base = img.String(), img.layers
		case fi.IsDir():
			desc, base = "directory "+rootfs, []tarLayer{dirLayer(rootfs)}
		case keepWhiteouts:
			l := fileLayer("layer tarball "+rootfs, rootfs, true)
			l.keepWhiteouts, l.implied = true, o.implied
			desc, base = "tarball "+rootfs, []tarLayer{l}
		default:
			desc, base = "tarball "+rootfs, []tarLayer{fileLayer("rootfs tarball "+rootfs, rootfs, false)}
		}
		switch {
		case len(layers) > 0:
			for _, l := range layers {
				base = append(base, fileLayer("layer "+l, l, true))
			}
			desc += fmt.Sprintf(" + %d layers (%s)", len(layers), strings.Join(layers, ", "))
			pseudo, entries, err = unpackLayers(ctx, base, src)
		case img != nil, keepWhiteouts:
			pseudo, entries, err = unpackLayers(ctx, base, src)
		default:
			pseudo, entries, err = unpackTarball(ctx, rootfs, src)
		}
		if err != nil {
			return 0, "", err
		}
		// mksquashfs 4.5.1 ignores a pseudo definition for "/": the
		// tarball's "./" entry becomes -root-mode/-uid/-gid, and without
		// one the root is 0755 root:root, whoever builds.
		var rootArgs []string
		pseudo, rootArgs = takeRootPseudo(pseudo)
		args = append(args, rootArgs...)
		pf := filepath.Join(tmp, "pseudo")
		if err := os.WriteFile(pf, []byte(strings.Join(pseudo, "\n")+"\n"), 0o644); err != nil {
			return 0, "", err
		}
		args = append(args, "-pf", pf)
	}
	if err := ctx.Err(); err != nil {
		return 0, "", err
	}
	if check != nil {
		if err := check(src); err != nil {
			return 0, "", err
		}
	}
	extra, n, err := additionArgs(src, adds)
	if err != nil {
		return 0, "", err
	}
	args, entries = append(args, extra...), entries+n
	cmd := exec.CommandContext(ctx, "mksquashfs", append([]string{src, out}, args...)...)
	// Its own process group, killed as a whole on cancel: nothing it starts
	// outlives the build.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return 0, "", fmt.Errorf("mksquashfs not found (Debian package squashfs-tools): %w", err)
		}
		if ctx.Err() != nil {
			return 0, "", fmt.Errorf("mksquashfs %s: %w", rootfs, ctx.Err())
		}
		return 0, "", fmt.Errorf("mksquashfs %s: %w\n%s", rootfs, err, strings.TrimSpace(output.String()))
	}
	// mksquashfs skips what it cannot store (a path of PATH_MAX bytes or
	// more: "File name too long, ignoring") and stores a file it cannot
	// read as an empty one ("Failed to read file X, creating empty file"),
	// with a warning and exit 0: the image would lack entries the summary
	// counts, or hold them empty.
	if skipped := skippedEntries(output.String(), src); len(skipped) > 0 {
		return 0, "", fmt.Errorf("mksquashfs %s left out or could not read %d entries, the image would lack them or hold them empty: %s", rootfs, len(skipped), strings.Join(skipped, "; "))
	}
	return entries, desc, nil
}

// skippedEntries finds mksquashfs's warnings about entries it left out
// ("... , ignoring") or stored empty ("Failed to read file ..."), naming
// each entry relative to the rootfs.
func skippedEntries(output, src string) []string {
	var out []string
	for _, l := range strings.Split(output, "\n") {
		low := strings.ToLower(l)
		if !strings.Contains(low, "ignoring") && !strings.HasPrefix(strings.TrimSpace(low), "failed to read file") {
			continue
		}
		l = strings.ReplaceAll(strings.TrimSpace(l), src+"/", "/")
		if len(l) > 300 {
			l = l[:150] + "..." + l[len(l)-150:]
		}
		out = append(out, l)
	}
	return out
}

// countEntries counts the entries of a directory tree (the root
// included). A file that cannot be read is mksquashfs's to find: it says so
// (skippedEntries), and opening every file first cost half a second for
// 50,000 files (/usr/share here: 0.07 s to walk, 0.57 s to walk and open).
func countEntries(ctx context.Context, root string) (int, error) {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("rootfs entry %s: %w", p, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
}

// mountPoints are the directories every image's root gets when it lacks
// them: where the init mounts the pseudo filesystems (boot's pseudoFS) and
// moves the lower and the data partition (layout.RomDir, layout.OverlayDir).
var mountPoints = []string{"proc", "sys", "dev", "run",
	strings.TrimPrefix(layout.RomDir, "/"), strings.TrimPrefix(layout.OverlayDir, "/")}

// entry is one tar header, made safe: a clean relative name.
type entry struct {
	hdr  *tar.Header
	name string // relative, clean, never ".." or absolute
	// layer is the index of the layer the entry came from (0 for a plain
	// tarball) and pos its header's place in that layer's tar; seq numbers
	// every entry read, so a regular file's content can be kept aside
	// under that number until the tree is made.
	layer, pos, seq int
	// opaque marks a directory of a stacked layer that hides what the
	// layers below hold in it (trusted.overlay.opaque=y, from a
	// .wh..wh..opq entry: keepWhiteouts).
	opaque bool
}

// regular reports whether the entry has content on disk (GNU sparse files
// are regular files stored with holes).
func (e entry) regular() bool {
	return e.hdr.Typeflag == tar.TypeReg || e.hdr.Typeflag == tar.TypeGNUSparse
}

// cleanName makes a tar entry name relative to the root: leading "/" and
// "./" are normal in tarballs; anything that climbs out of the root is an
// error, and so is a name a pseudo-file definition cannot carry.
func cleanName(name string) (string, error) {
	n := path.Clean("/" + name)
	if strings.Contains(name, "..") {
		for _, part := range strings.Split(name, "/") {
			if part == ".." {
				return "", fmt.Errorf("tar entry %q climbs out of the root (..)", name)
			}
		}
	}
	// mksquashfs reads pseudo definitions line by line: a newline cannot
	// be escaped in one.
	if strings.ContainsAny(name, "\n\r") {
		return "", fmt.Errorf("tar entry %q: a newline in a file name cannot be stored (mksquashfs pseudo definitions are one per line); rename it", name)
	}
	return strings.TrimPrefix(n, "/"), nil
}

// pseudoName escapes a name for a pseudo file (spaces, tabs and
// backslashes are backslash-escaped: pseudo files take no quotes). Bytes,
// not runes: a name that is not UTF-8 is stored as it is.
func pseudoName(rel string) string {
	var b strings.Builder
	b.WriteByte('/')
	for i := 0; i < len(rel); i++ {
		c := rel[i]
		if c == ' ' || c == '\\' || c == '\t' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// rootDirArgs sets the image's root directory: mksquashfs's own options,
// which it honours whoever runs it.
func rootDirArgs(mode uint32, uid, gid int) []string {
	return []string{"-root-mode", fmt.Sprintf("%o", mode&0o7777), "-root-uid", strconv.Itoa(uid), "-root-gid", strconv.Itoa(gid)}
}

// takeRootPseudo removes the "/" line from pseudo definitions and returns
// it as rootDirArgs (0755 root:root when there is none).
func takeRootPseudo(pseudo []string) ([]string, []string) {
	args := rootDirArgs(0o755, 0, 0)
	out := pseudo[:0:0]
	for _, l := range pseudo {
		var mode uint32
		var uid, gid int
		if n, err := fmt.Sscanf(l, "/ m %o %d %d", &mode, &uid, &gid); err == nil && n == 3 {
			args = rootDirArgs(mode, uid, gid)
			continue
		}
		out = append(out, l)
	}
	return out, args
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

// Compression magics (RFC 1952, the xz file format, RFC 8878, bzip2).
var (
	gzipMagic  = []byte{0x1f, 0x8b}
	xzMagic    = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	zstdMagic  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	bzip2Magic = []byte("BZh")
)

// decompress recognizes a compressed tarball by its first bytes, whatever
// its file name.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(6)
	nop := func() {}
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, nop, fmt.Errorf("gzip: %w", err)
		}
		return gz, func() { gz.Close() }, nil
	case bytes.HasPrefix(magic, xzMagic):
		x, err := xz.NewReader(br)
		if err != nil {
			return nil, nop, fmt.Errorf("xz: %w", err)
		}
		return x, nop, nil
	case bytes.HasPrefix(magic, zstdMagic):
		// The decoder's window is bounded, so a hostile frame cannot ask
		// for gigabytes of memory.
		z, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20))
		if err != nil {
			return nil, nop, fmt.Errorf("zstd: %w", err)
		}
		return z, z.Close, nil
	case bytes.HasPrefix(magic, bzip2Magic):
		return bzip2.NewReader(br), nop, nil
	}
	return br, nop, nil
}

// unpackTarball unpacks a rootfs tarball into dir as the current user and
// returns the pseudo-file lines and the entry count (the root included).
func unpackTarball(ctx context.Context, tarball, dir string) ([]string, int, error) {
	f, err := os.Open(tarball)
	if err != nil {
		return nil, 0, fmt.Errorf("rootfs: %w", err)
	}
	defer f.Close()
	pseudo, n, err := unpack(ctx, f, dir)
	if err != nil {
		return nil, 0, fmt.Errorf("rootfs tarball %s: %w", tarball, err)
	}
	return pseudo, n, nil
}

// maxEntrySize bounds one file of a rootfs tarball (its size as unpacked,
// holes included): a sparse entry claiming terabytes would otherwise be
// read, zero by zero, for hours.
var maxEntrySize int64 = 16 << 30

// checkTree refuses an archive whose entries cannot all exist at once: an
// entry below a name the archive makes a symlink (the unpack would have to
// follow it, and an image cannot hold both) or a non-directory, and a hard
// link to a directory.
func checkTree(entries []entry) error {
	final := make(map[string]*tar.Header, len(entries))
	for _, e := range entries {
		final[e.name] = e.hdr
	}
	for _, e := range entries {
		for p := path.Dir(e.name); p != "." && p != "/"; p = path.Dir(p) {
			h, ok := final[p]
			if !ok || h.Typeflag == tar.TypeDir {
				continue
			}
			what := "not a directory"
			if h.Typeflag == tar.TypeSymlink {
				what = fmt.Sprintf("a symlink (to %q)", h.Linkname)
			}
			return fmt.Errorf("tar entry %q lies below %q, which the archive makes %s; entries are never unpacked through a symlink", e.hdr.Name, h.Name, what)
		}
		if e.hdr.Typeflag == tar.TypeLink {
			if t := final[e.hdr.Linkname]; t != nil && t.Typeflag == tar.TypeDir {
				return fmt.Errorf("tar entry %q: hard link to directory %q", e.hdr.Name, e.hdr.Linkname)
			}
		}
	}
	return nil
}

// copyBufs are copySparse's buffers.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// copySparse copies a file's content, seeking over blocks of zeros instead
// of writing them: a sparse entry (or a run of zeros) stays a hole on the
// host, and mksquashfs stores holes as sparse blocks.
func copySparse(ctx context.Context, f *os.File, r io.Reader) error {
	// One buffer per unpacking goroutine, not per file: a new 128 KiB for
	// each of 50,000 small files was a seventh of an unpack's CPU, and as
	// much again in garbage collection (pprof).
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if !allZero(buf[:n]) {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return f.Truncate(off)
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
