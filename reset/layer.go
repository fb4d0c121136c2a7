package reset

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"

	"github.com/ovroot/ovroot/backup"
)

// A restore's backup is an OCI layer tarball as package backup writes it
// (image-spec layer.md): whiteouts as empty files .wh.NAME, an opaque
// directory as DIR/.wh..wh..opq, xattrs as PAX SCHILY.xattr.* records.
// This file reads and checks one; unpack.go turns it into an upper.
// The names are package backup's, which writes them.
const (
	whiteoutPrefix = backup.WhiteoutPrefix
	whiteoutOpaque = backup.WhiteoutOpaque
	// overlayOpaque marks an opaque directory in the upper of the init's
	// (privileged) overlay mount.
	overlayOpaque = backup.OverlayOpaque
	blockSize     = 4096 // for the estimate of the room a layer takes unpacked
)

// LayerSummary is what a backup layer holds, as its check counts it.
type LayerSummary struct {
	Entries int   // tar entries
	Bytes   int64 // content of its regular files
	// Need estimates the room it takes unpacked: file contents rounded
	// up to 4 KiB blocks, a block for each directory and long symlink.
	Need int64
}

// BadLayerError says a backup layer cannot be restored: what is wrong, and
// with which entry ("" when it is the archive itself: not a tar, cut
// short, a gzip checksum that does not match).
type BadLayerError struct {
	Entry string
	Err   error
}

func (e *BadLayerError) Error() string {
	if e.Entry == "" {
		return fmt.Sprintf("the backup is not a readable layer tarball: %v", e.Err)
	}
	return fmt.Sprintf("the backup's entry %q: %v", e.Entry, e.Err)
}

func (e *BadLayerError) Unwrap() error { return e.Err }

func badArchive(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // cut short: the end is missing
	}
	return &BadLayerError{Err: err}
}

// layerReader reads a layer tarball, plain or gzip (told by its magic
// number), and insists on the whole of it: the tar's end-of-archive marker
// (two zero blocks, which archive/tar does not require) and, for gzip, the
// stream's checksum. A copy cut short at an entry boundary is a valid
// looking tar without its end; here it is an error.
type layerReader struct {
	tr     *tar.Reader
	count  *countReader
	gz     *gzip.Reader
	before int64 // bytes read before the current Next
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func newLayerReader(r io.Reader) (*layerReader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if err != nil {
		return nil, badArchive(err)
	}
	lr := &layerReader{}
	var src io.Reader = br
	if bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		if lr.gz, err = gzip.NewReader(br); err != nil {
			return nil, badArchive(fmt.Errorf("gzip: %w", err))
		}
		src = lr.gz
	}
	lr.count = &countReader{r: src}
	lr.tr = tar.NewReader(lr.count)
	return lr, nil
}

// next returns the next header, or io.EOF after a complete archive.
func (lr *layerReader) next() (*tar.Header, error) {
	// The rest of the current entry first: where its data ends is where
	// the end-of-archive marker must start, whatever the caller read of
	// it (an unpack reads nothing of a directory's or a link's claimed
	// data).
	if _, err := io.Copy(io.Discard, lr.tr); err != nil {
		return nil, badArchive(err)
	}
	lr.before = lr.count.n
	h, err := lr.tr.Next()
	if err == io.EOF {
		// The end: two zero blocks after the last entry's padded data.
		if end := (lr.before+511)/512*512 + 1024; lr.count.n < end {
			return nil, badArchive(errors.New("cut short: the tar's end-of-archive marker is missing"))
		}
		if lr.gz != nil {
			if _, err := io.Copy(io.Discard, lr.gz); err != nil {
				return nil, badArchive(fmt.Errorf("gzip: %w", err))
			}
		}
		return nil, io.EOF
	}
	if err != nil {
		return nil, badArchive(err)
	}
	return h, nil
}

// read reads the current entry's content; a failure is the archive's.
func (lr *layerReader) Read(p []byte) (int, error) {
	n, err := lr.tr.Read(p)
	if err != nil && err != io.EOF {
		err = badArchive(err)
	}
	return n, err
}

// entry kinds the check remembers by name.
const (
	kindDir      = 'd' // a directory entry
	kindImplied  = 'i' // a directory only implied by the names below it
	kindWhiteout = 'w' // a name a whiteout removes
	kindOther    = 'f' // a file, symlink, device, fifo or hard link
	kindSymlink  = 'l'
)

// layerCheck checks a layer's entries in order, as they are read, so the
// same code refuses a bad backup in ovrootctl and, should the staged copy
// have been damaged since, at boot before anything is unpacked past it.
type layerCheck struct {
	kind map[string]byte
	sum  LayerSummary
}

func newLayerCheck() *layerCheck { return &layerCheck{kind: map[string]byte{}} }

// What an entry becomes in the upper.
type action int

const (
	actEntry    action = iota // as it is
	actRoot                   // the upper's own directory ("./")
	actWhiteout               // a character device 0/0 named target
	actOpaque                 // the opaque mark of directory target
)

// cleanName is a tar name as a path below the upper ("" for the upper
// itself), or an error: an absolute name, a ".." or an unclean name
// ("a//b", "a/./b") is refused rather than repaired.
func cleanName(name string) (string, error) {
	n := strings.TrimSuffix(name, "/")
	for strings.HasPrefix(n, "./") {
		n = n[2:]
	}
	if n == "" || n == "." {
		return "", nil
	}
	if strings.HasPrefix(n, "/") {
		return "", errors.New("an absolute name (a layer's names are relative to its root)")
	}
	if !filepath.IsLocal(n) || path.Clean(n) != n || strings.ContainsRune(n, 0) {
		return "", errors.New("not a clean name below the root (no .., no empty or . components)")
	}
	return n, nil
}

// entry checks h and says what it becomes and where.
func (c *layerCheck) entry(h *tar.Header) (action, string, error) {
	a, target, err := c.check(h)
	if err != nil {
		return 0, "", &BadLayerError{Entry: h.Name, Err: err}
	}
	c.sum.Entries++
	return a, target, nil
}

func (c *layerCheck) check(h *tar.Header) (action, string, error) {
	name, err := cleanName(h.Name)
	if err != nil {
		return 0, "", err
	}
	if name == "" {
		if h.Typeflag != tar.TypeDir {
			return 0, "", errors.New("the root must be a directory")
		}
		if c.kind["."] != 0 {
			return 0, "", errors.New("the root is listed twice")
		}
		c.kind["."] = kindDir
		return actRoot, "", nil
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	// Everything below a directory: never below one of the layer's own
	// symlinks (unpacked, it could lead anywhere) or files.
	if err := c.parents(dir); err != nil {
		return 0, "", err
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return c.whiteout(h, dir, base)
	}
	switch k := c.kind[name]; {
	case k == kindImplied && h.Typeflag == tar.TypeDir:
	case k == kindImplied:
		return 0, "", errors.New("comes after entries below it, as something other than their directory")
	case k == kindWhiteout:
		return 0, "", errors.New("the layer also has a whiteout of it")
	case k != 0:
		return 0, "", errors.New("listed twice")
	}
	switch h.Typeflag {
	case tar.TypeReg:
		if h.Size < 0 {
			return 0, "", errors.New("negative size")
		}
		c.sum.Bytes += h.Size
		c.sum.Need += (h.Size + blockSize - 1) / blockSize * blockSize
		c.kind[name] = kindOther
	case tar.TypeDir:
		if c.kind[name] == 0 {
			c.sum.Need += blockSize
		}
		c.kind[name] = kindDir
	case tar.TypeSymlink:
		if h.Linkname == "" {
			return 0, "", errors.New("a symlink to nothing")
		}
		if len(h.Linkname) >= 60 { // longer than ext4 stores in the inode
			c.sum.Need += blockSize
		}
		c.kind[name] = kindSymlink
	case tar.TypeLink:
		to, err := cleanName(h.Linkname)
		if err != nil {
			return 0, "", fmt.Errorf("hard link to %q: %w", h.Linkname, err)
		}
		if k := c.kind[to]; k != kindOther && k != kindSymlink {
			return 0, "", fmt.Errorf("hard link to %q, which is not a file listed before it", h.Linkname)
		}
		c.kind[name] = kindOther
	case tar.TypeChar, tar.TypeBlock:
		if h.Typeflag == tar.TypeChar && h.Devmajor == 0 && h.Devminor == 0 {
			return 0, "", errors.New("a character device 0/0 is an overlayfs whiteout; a layer writes a whiteout as .wh.NAME")
		}
		if h.Devmajor < 0 || h.Devminor < 0 || h.Devmajor > 0xfff || h.Devminor > 0xfffff {
			return 0, "", fmt.Errorf("device number %d:%d out of range", h.Devmajor, h.Devminor)
		}
		c.kind[name] = kindOther
	case tar.TypeFifo:
		c.kind[name] = kindOther
	default:
		return 0, "", fmt.Errorf("type %q is not restored (only files, directories, symlinks, hard links, devices and fifos)", h.Typeflag)
	}
	return actEntry, name, nil
}

// parents checks dir's components and notes them as directories.
func (c *layerCheck) parents(dir string) error {
	if dir == "" {
		return nil
	}
	for i := 0; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		p := dir[:i]
		switch c.kind[p] {
		case 0:
			c.kind[p] = kindImplied
			c.sum.Need += blockSize
		case kindDir, kindImplied:
		case kindSymlink:
			return fmt.Errorf("is below %q, a symlink of the layer: unpacked through it, it could land outside the upper", p)
		case kindWhiteout:
			return fmt.Errorf("is below %q, which the layer removes (whiteout)", p)
		default:
			return fmt.Errorf("is below %q, which is not a directory", p)
		}
	}
	return nil
}

// whiteout checks a .wh. entry: an empty regular file, .wh..wh..opq or
// .wh.NAME (image-spec layer.md, "Whiteouts").
func (c *layerCheck) whiteout(h *tar.Header, dir, base string) (action, string, error) {
	if h.Typeflag != tar.TypeReg {
		return 0, "", errors.New("a whiteout name must be a regular file")
	}
	if base == whiteoutOpaque {
		if dir == "" {
			return 0, "", errors.New("an opaque mark on the root would hide the whole factory root")
		}
		return actOpaque, dir, nil
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	if strings.HasPrefix(victim, whiteoutPrefix) || victim == "" || victim == "." || victim == ".." {
		return 0, "", errors.New("not a well-formed whiteout (.wh.NAME or .wh..wh..opq)")
	}
	target := path.Join(dir, victim)
	if c.kind[target] != 0 {
		return 0, "", fmt.Errorf("a whiteout of %q, which the layer also lists", target)
	}
	c.kind[target] = kindWhiteout
	return actWhiteout, target, nil
}

// CheckLayer reads a whole backup layer from r and checks it, as
// ScheduleRestore does before it stages one.
func CheckLayer(r io.Reader) (LayerSummary, error) {
	lr, err := newLayerReader(r)
	if err != nil {
		return LayerSummary{}, err
	}
	c := newLayerCheck()
	for {
		h, err := lr.next()
		if err == io.EOF {
			return c.sum, nil
		}
		if err != nil {
			return c.sum, err
		}
		if _, _, err := c.entry(h); err != nil {
			return c.sum, err
		}
		if _, err := io.Copy(io.Discard, lr); err != nil {
			return c.sum, &BadLayerError{Entry: h.Name, Err: errors.Unwrap(err)}
		}
	}
}

// layerXattrs are an entry's xattrs to set: its SCHILY.xattr.* records
// but overlayfs's own, which would change what the overlay shows (an
// opaque directory comes from .wh..wh..opq only; a redirect or metacopy
// would point into the lower).
func layerXattrs(h *tar.Header) map[string]string {
	var x map[string]string
	for k, v := range h.PAXRecords {
		n, ok := strings.CutPrefix(k, backup.PAXXattr)
		if !ok || n == "" || backup.OverlayOwn(n) {
			continue
		}
		if x == nil {
			x = map[string]string{}
		}
		x[n] = v
	}
	return x
}
