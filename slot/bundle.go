package slot

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"aead.dev/minisign"
	"github.com/ovroot/ovroot/layout"
)

// An update bundle is one uncompressed POSIX tar file:
//
//	ovroot-bundle.json           the Manifest (first member)
//	ovroot-bundle.json.minisig   its signature (sign.go), absent when unsigned
//	root.squashfs                the root, written to the inactive slot
//	vmlinuz              the kernel, to slot-X/ on the boot partition
//	initrd.img           the initramfs, likewise
//
// in that order, each member listed in Manifest.Files with its size and
// SHA-256. A tar reads as a stream, so a bundle can come from a file, a
// pipe, a block device or a URL (Upgrade reads it twice, so not from a
// pipe: BundleSource). A reader checks the signature before it parses
// the manifest, and each member's SHA-256 as it streams it.
const (
	ManifestName = "ovroot-bundle.json"
	RootName     = "root.squashfs"
	// BundleFormat is the manifest's format number; a device refuses a
	// bundle of a format it does not know. Format 1 (no version, never
	// signed) is read only to be refused.
	BundleFormat = 2
)

// BundleMembers is the order of the members after the manifest.
var BundleMembers = []string{RootName, layout.KernelFile, layout.InitrdFile}

// Manifest describes a bundle.
type Manifest struct {
	Format int           `json:"format"`
	Arch   layout.Arch   `json:"arch"`
	Board  string        `json:"board"`
	Loader layout.Loader `json:"loader"`
	// BuildID is BuildID(sha256 of root.squashfs).
	BuildID string `json:"build_id"`
	// Cmdline is the image's kernel command line as built; the entry adds
	// the slot's parameters (Entry.KernelCmdline).
	Cmdline       string `json:"cmdline"`
	KernelRelease string `json:"kernel_release,omitempty"`
	Tries         int    `json:"tries"` // trial boots the new slot gets
	// Version orders releases (layout.ParseVersion); a device refuses one older
	// than it runs or ever confirmed.
	Version string    `json:"version"`
	Created time.Time `json:"created"`
	Files   []File    `json:"files"`
}

// File is one member of a bundle.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// File returns the manifest's entry for name.
func (m Manifest) File(name string) (File, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// Check reports what makes m unusable on any device: a format, arch,
// loader or member list this code does not know, or a build id that does
// not match the root's checksum.
func (m Manifest) Check() error {
	if m.Format == 1 {
		return fmt.Errorf("bundle format 1 was made by an ovroot before signed, versioned bundles: rebuild it with this ovroot (ovroot build --update FILE --sign-key KEY)")
	}
	if m.Format != BundleFormat {
		return fmt.Errorf("bundle format %d, this ovrootctl reads format %d", m.Format, BundleFormat)
	}
	if _, err := layout.ParseVersion(m.Version); err != nil {
		return fmt.Errorf("bundle version: %w", err)
	}
	if !m.Arch.Valid() {
		return fmt.Errorf("bundle is for unknown arch %q", m.Arch)
	}
	if _, err := layout.ParseLoader(string(m.Loader)); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if m.Tries < 1 || m.Tries > 99 {
		return fmt.Errorf("bundle gives %d trial boots (want 1 to 99)", m.Tries)
	}
	if len(m.Files) != len(BundleMembers) {
		return fmt.Errorf("bundle lists %d files, want %v", len(m.Files), BundleMembers)
	}
	for i, f := range m.Files {
		if f.Name != BundleMembers[i] {
			return fmt.Errorf("bundle file %d is %q, want %q", i+1, f.Name, BundleMembers[i])
		}
		if f.Size <= 0 {
			return fmt.Errorf("bundle file %s has size %d", f.Name, f.Size)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("bundle file %s: sha256 %q is not a SHA-256 in hex", f.Name, f.SHA256)
		}
	}
	sum, _ := hex.DecodeString(m.Files[0].SHA256)
	if id := BuildID(sum); m.BuildID != id {
		return fmt.Errorf("bundle build id %q does not match its root (%s)", m.BuildID, id)
	}
	return nil
}

// Source is one member to write: its name and where its bytes come from.
type Source struct {
	Name string
	Open func() (io.ReadCloser, error)
}

// WriteBundle writes a bundle to w: m (Files are filled in here, from two
// passes over each source: one to hash and size, one to copy), its
// signature by key (none when key is nil) and then the sources, which must
// be BundleMembers in order. m.BuildID is set from the root's checksum.
func WriteBundle(w io.Writer, m Manifest, srcs []Source, key *minisign.PrivateKey) error {
	if len(srcs) != len(BundleMembers) {
		return fmt.Errorf("bundle needs %v", BundleMembers)
	}
	m.Format = BundleFormat
	m.Files = nil
	for i, s := range srcs {
		if s.Name != BundleMembers[i] {
			return fmt.Errorf("bundle member %d is %q, want %q", i+1, s.Name, BundleMembers[i])
		}
		f, err := hashSource(s)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, f)
	}
	sum, _ := hex.DecodeString(m.Files[0].SHA256)
	m.BuildID = BuildID(sum)
	if err := m.Check(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	tw := tar.NewWriter(w)
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Size: size, Mode: 0o644, ModTime: m.Created, Format: tar.FormatPAX, Typeflag: tar.TypeReg}
	}
	if err := tw.WriteHeader(hdr(ManifestName, int64(len(data)))); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if key != nil {
		sig := signManifest(*key, data, m)
		if err := tw.WriteHeader(hdr(SigName, int64(len(sig)))); err != nil {
			return err
		}
		if _, err := tw.Write(sig); err != nil {
			return err
		}
	}
	for i, s := range srcs {
		if err := tw.WriteHeader(hdr(s.Name, m.Files[i].Size)); err != nil {
			return err
		}
		r, err := s.Open()
		if err != nil {
			return fmt.Errorf("bundle member %s: %w", s.Name, err)
		}
		h := sha256.New()
		n, err := io.Copy(tw, io.TeeReader(r, h))
		r.Close()
		if err != nil {
			return fmt.Errorf("bundle member %s: %w", s.Name, err)
		}
		if n != m.Files[i].Size || hex.EncodeToString(h.Sum(nil)) != m.Files[i].SHA256 {
			return fmt.Errorf("bundle member %s changed while the bundle was written", s.Name)
		}
	}
	return tw.Close()
}

func hashSource(s Source) (File, error) {
	r, err := s.Open()
	if err != nil {
		return File{}, fmt.Errorf("bundle member %s: %w", s.Name, err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return File{}, fmt.Errorf("bundle member %s: %w", s.Name, err)
	}
	return File{Name: s.Name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Reader reads a bundle as a stream.
type Reader struct {
	Manifest Manifest
	// Signer is the id of the key that signed the bundle, "" when unsigned.
	Signer string
	// Raw is the manifest's bytes as signed.
	Raw     []byte
	src     io.Reader
	tr      *tar.Reader
	next    int
	pending *tar.Header // a member header read while looking for the signature
	ended   bool        // the source was read to its end
}

// maxTail bounds what is read after the last member: the tar trailer (1
// KiB from Go's archive/tar; GNU tar pads to its 10 KiB record), to its
// end for a source that checks itself there (an OCI blob).
const maxTail = 1 << 20

// NewReader reads the manifest and its signature, checks the signature
// against t before it parses anything (checkSignature), then checks the
// manifest (Manifest.Check).
func NewReader(r io.Reader, t Trust) (*Reader, error) {
	tr := tar.NewReader(r)
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("not an ovroot update bundle (no tar header: %v)", err)
	}
	if h.Name != ManifestName {
		return nil, fmt.Errorf("not an ovroot update bundle (first member is %q, want %s)", h.Name, ManifestName)
	}
	if h.Size > 1<<20 {
		return nil, fmt.Errorf("bundle manifest is %d bytes: too large", h.Size)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return nil, fmt.Errorf("bundle manifest: %w", err)
	}
	br := &Reader{src: r, tr: tr, Raw: data}
	var sig []byte
	h, err = tr.Next()
	switch {
	case err != nil:
		return nil, fmt.Errorf("bundle: nothing after the manifest: %w", err)
	case h.Name == SigName:
		if h.Size > maxSig {
			return nil, fmt.Errorf("bundle signature is %d bytes: too large", h.Size)
		}
		if sig, err = io.ReadAll(tr); err != nil {
			return nil, fmt.Errorf("bundle signature: %w", err)
		}
	default:
		br.pending = h
	}
	if br.Signer, err = checkSignature(t, data, sig); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &br.Manifest); err != nil {
		return nil, fmt.Errorf("bundle manifest: %w", err)
	}
	if err := br.Manifest.Check(); err != nil {
		return nil, err
	}
	return br, nil
}

// ErrChecksum is wrapped by every checksum or size mismatch.
var ErrChecksum = errors.New("checksum mismatch")

// Next returns the next member (in BundleMembers order) as a reader of
// exactly its manifest size that checks the SHA-256 when it reaches the
// end: the final Read returns an error wrapping ErrChecksum instead of
// io.EOF when the bytes differ. io.EOF after the last member, once the
// source was read to its end: a source that checks its own length and
// digest (an OCI blob) reports a mismatch only there, so a bundle is not
// taken until every byte it came in was read.
func (r *Reader) Next() (File, io.Reader, error) {
	if r.next >= len(r.Manifest.Files) {
		if !r.ended {
			n, err := io.Copy(io.Discard, io.LimitReader(r.src, maxTail+1))
			if err != nil {
				return File{}, nil, fmt.Errorf("bundle: after its last member: %w", err)
			}
			// More than that is a block device (a USB stick the bundle
			// was written to) holding more than its bundle: what follows
			// is not the bundle's and is not read further.
			_ = n
			r.ended = true
		}
		return File{}, nil, io.EOF
	}
	want := r.Manifest.Files[r.next]
	h, err := r.pending, error(nil)
	r.pending = nil
	if h == nil {
		h, err = r.tr.Next()
	}
	if err != nil {
		return want, nil, fmt.Errorf("bundle member %s: %w", want.Name, err)
	}
	if h.Name != want.Name {
		return want, nil, fmt.Errorf("bundle member %d is %q, the manifest says %q", r.next+1, h.Name, want.Name)
	}
	if h.Size != want.Size {
		return want, nil, fmt.Errorf("bundle member %s is %d bytes, the manifest says %d: %w", want.Name, h.Size, want.Size, ErrChecksum)
	}
	r.next++
	return want, &checkReader{f: want, r: r.tr, h: sha256.New()}, nil
}

type checkReader struct {
	f File
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (c *checkReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return n, fmt.Errorf("bundle member %s: the bundle ends after %d of its %d bytes (cut short): %w", c.f.Name, c.n, c.f.Size, err)
	}
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("bundle member %s: %w", c.f.Name, err)
	}
	if err == io.EOF {
		if got := hex.EncodeToString(c.h.Sum(nil)); c.n != c.f.Size || got != c.f.SHA256 {
			return n, fmt.Errorf("bundle member %s: sha256 %s, the manifest says %s: %w", c.f.Name, got, c.f.SHA256, ErrChecksum)
		}
	}
	return n, err
}

// Verify reads the whole bundle from r and checks its signature against t
// and every member against its manifest: the pass a device makes before
// it changes anything.
func Verify(r io.Reader, t Trust) (*Reader, error) {
	br, err := NewReader(r, t)
	if err != nil {
		return nil, err
	}
	return br, drain(br)
}

func drain(br *Reader) error {
	for {
		_, r, err := br.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
	}
}
