package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/ovroot/ovroot/internal/tmpdir"
	ovlayout "github.com/ovroot/ovroot/layout"
)

// Kinds of container image a rootfs may be, as messages and the build
// summary name them.
const (
	KindOCILayout  = "OCI image layout"
	KindOCIArchive = "OCI archive"
	KindDockerSave = "docker save tarball"
)

// containerImage is the image a rootfs input holds for the target arch:
// its layers, bottom first, each read through its digest check.
type containerImage struct {
	kind, path string
	platform   v1.Platform
	digest     string // the manifest's (OCI); the config's (docker save, which has no manifest blob)
	layers     []tarLayer
	close      func()
}

// String is what the build summary says of the rootfs.
func (c *containerImage) String() string {
	return fmt.Sprintf("%s %s, %s, %d layers, %s", c.kind, c.path, c.platform.String(), len(c.layers), c.digest)
}

// ociPlatform is the OCI platform of an arch (image-spec image-index.md,
// "platform"; Go's GOARCH names). 32-bit ARM is ARMv7 (Debian armhf).
func ociPlatform(a ovlayout.Arch) v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: a.GOARCH()}
	if a == ovlayout.ARM {
		p.Variant = "v7"
	}
	return p
}

// platformRank says how well an image's platform fits the target: 0 is
// the best, -1 does not run there. An arm image with no variant, or v6 or
// v5 (which an ARMv7 CPU runs), fits 32-bit ARM after v7.
func platformRank(have v1.Platform, a ovlayout.Arch) int {
	want := ociPlatform(a)
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return -1
	}
	var ok []string
	switch a {
	case ovlayout.ARM:
		ok = []string{"v7", "", "v6", "v5"}
	case ovlayout.ARM64:
		ok = []string{"", "v8"}
	default:
		ok = []string{"", "v1"}
	}
	for i, v := range ok {
		if have.Variant == v {
			return i
		}
	}
	return -1
}

// openImage returns the image a rootfs input holds for arch, and nil for
// a plain directory or tarball. Detection is by content: a directory with
// oci-layout and index.json is an OCI image layout; a tar (compressed or
// not) of one is an OCI archive; a tar with a manifest.json in docker
// save's format at its top is a docker save tarball; the name never
// counts. arch "" refuses an image (nothing to pick by).
func openImage(ctx context.Context, rootfs string, arch ovlayout.Arch) (*containerImage, error) {
	fi, err := os.Stat(rootfs)
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	var kind string
	switch {
	case fi.IsDir():
		if isLayoutDir(rootfs) {
			kind = KindOCILayout
		}
	case fi.Mode().IsRegular():
		if kind, err = sniffArchive(ctx, rootfs); err != nil {
			return nil, err
		}
	}
	if kind == "" {
		return nil, nil
	}
	if arch == "" {
		return nil, fmt.Errorf("rootfs %s is a container image (%s): the target arch picks its image, and none was given", rootfs, kind)
	}
	var img *containerImage
	switch kind {
	case KindOCILayout:
		img, err = fromLayout(rootfs, arch)
	case KindOCIArchive:
		tmp, done, terr := tmpdir.Make("oci")
		if terr != nil {
			return nil, terr
		}
		if err = extractLayout(ctx, rootfs, tmp); err == nil {
			img, err = fromLayout(tmp, arch)
		}
		if err != nil {
			done()
		} else {
			img.close = done
		}
	case KindDockerSave:
		img, err = fromDockerSave(rootfs, arch)
	}
	if err != nil {
		return nil, fmt.Errorf("rootfs %s %s: %w", kind, rootfs, err)
	}
	img.kind, img.path = kind, rootfs
	if img.close == nil {
		img.close = func() {}
	}
	for i := range img.layers {
		img.layers[i].name = fmt.Sprintf("%s %s: %s", kind, rootfs, img.layers[i].name)
	}
	return img, nil
}

// isLayoutDir reports whether dir is an OCI image layout (image-spec
// image-layout.md: the oci-layout file and index.json).
func isLayoutDir(dir string) bool {
	for _, f := range []string{"oci-layout", "index.json"} {
		fi, err := os.Lstat(filepath.Join(dir, f))
		if err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// blobName matches the top-level names of docker save tarballs: docker's
// "<64 hex>/layer.tar" and "<64 hex>.json", podman's "<64 hex>.tar",
// go-containerregistry's "sha256:<64 hex>" config and "<64 hex>.tar.gz".
var blobName = regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}(\.json|\.tar|\.tar\.gz)?$`)

// configHex is the sha256 a docker save tarball names its config by.
var configHex = regexp.MustCompile(`^(?:sha256:)?([0-9a-f]{64})(?:\.json)?$`)

// imageTopNames are what an OCI archive or a docker save tarball holds at
// its top; a tar with anything else there (etc/, usr/) is a rootfs.
var imageTopNames = map[string]bool{"oci-layout": true, "index.json": true, "manifest.json": true, "repositories": true, "blobs": true}

// sniffArchive says which kind of image a tarball is, "" for a rootfs
// tarball. It stops at the first top-level name an image does not have,
// so a rootfs tarball is not read to its end. A manifest.json counts only
// if it parses as docker save's (a list of {Config, RepoTags, Layers}
// naming a config and at least one layer). A tar it cannot read is left
// to the rootfs tarball's unpack to report.
func sniffArchive(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("rootfs: %w", err)
	}
	defer f.Close()
	r, done, err := decompress(f)
	if err != nil {
		return "", nil
	}
	defer done()
	tr := tar.NewReader(r)
	var ociLayout, index, docker bool
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		h, err := tr.Next()
		if err != nil {
			break // io.EOF, or not a tar: the rootfs path says which
		}
		n, err := cleanName(h.Name)
		if err != nil {
			return "", nil
		}
		if n == "" {
			continue
		}
		top, _, _ := strings.Cut(n, "/")
		if !imageTopNames[top] && !blobName.MatchString(top) {
			return "", nil
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		switch n {
		case "oci-layout":
			ociLayout = true
		case "index.json":
			index = true
		case "manifest.json":
			docker = isDockerManifest(io.LimitReader(tr, 1<<20))
		}
	}
	switch {
	case ociLayout && index:
		return KindOCIArchive, nil
	case docker:
		return KindDockerSave, nil
	}
	return "", nil
}

func isDockerManifest(r io.Reader) bool {
	var m tarball.Manifest
	if err := json.NewDecoder(r).Decode(&m); err != nil || len(m) == 0 {
		return false
	}
	for _, d := range m {
		if d.Config == "" || len(d.Layers) == 0 {
			return false
		}
	}
	return true
}

// extractLayout unpacks the OCI layout an archive holds into dir: only
// oci-layout, index.json and blobs/, only regular files and directories,
// through an os.Root (the archive is untrusted like any rootfs).
func extractLayout(ctx context.Context, archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	r, done, err := decompress(f)
	if err != nil {
		return err
	}
	defer done()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not a valid tar archive: %w", err)
		}
		n, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		if n != "oci-layout" && n != "index.json" && n != "blobs" && !strings.HasPrefix(n, "blobs/") {
			continue // docker save's own files next to the layout
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(n, 0o755)
		case tar.TypeReg:
			if d := path.Dir(n); d != "." {
				err = root.MkdirAll(d, 0o755)
			}
			var out *os.File
			if err == nil {
				out, err = root.OpenFile(n, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			}
			if err == nil {
				_, err = io.Copy(out, tr)
				if cerr := out.Close(); err == nil {
					err = cerr
				}
			}
		default:
			err = fmt.Errorf("a %q entry; an OCI layout holds only files and directories", string(h.Typeflag))
		}
		if err != nil {
			return fmt.Errorf("tar entry %q: %w", h.Name, err)
		}
	}
}

// candidate is one image of an index, with the platform it is for.
type candidate struct {
	platform v1.Platform
	digest   v1.Hash
	img      v1.Image
}

// fromLayout picks the image for arch from an OCI layout's index.json
// (following nested indexes, as buildx writes them) and checks what it
// reads against its digest: each manifest, the config, every layer.
func fromLayout(dir string, arch ovlayout.Arch) (*containerImage, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	cands, err := indexImages(idx, "index.json", 0)
	if err != nil {
		return nil, err
	}
	c, err := pick(cands, "index.json", arch)
	if err != nil {
		return nil, err
	}
	raw, err := c.img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("manifest blob %s: %w", c.digest, err)
	}
	if err := checkDigest(fmt.Sprintf("manifest blob %s", c.digest), c.digest, raw); err != nil {
		return nil, err
	}
	m, err := c.img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("manifest blob %s: %w", c.digest, err)
	}
	cf, err := readConfig(c.img, m.Config.Digest.String(), &m.Config.Digest, arch)
	if err != nil {
		return nil, err
	}
	if len(m.Layers) != len(cf.RootFS.DiffIDs) {
		return nil, fmt.Errorf("manifest blob %s lists %d layers, its config %s %d diff_ids", c.digest, len(m.Layers), m.Config.Digest, len(cf.RootFS.DiffIDs))
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	img := &containerImage{platform: *cf.Platform(), digest: c.digest.String()}
	for i, d := range m.Layers {
		if strings.Contains(string(d.MediaType), "encrypted") {
			return nil, fmt.Errorf("layer blob %s is encrypted (%s)", d.Digest, d.MediaType)
		}
		d, diffID := d, cf.RootFS.DiffIDs[i]
		img.layers = append(img.layers, verifiedLayer(fmt.Sprintf("layer %d/%d blob %s", i+1, len(m.Layers), d.Digest),
			func() (io.ReadCloser, error) { return p.Blob(d.Digest) }, &d.Digest, diffID))
	}
	return img, nil
}

// indexImages lists the images an index names, with their platforms (from
// the index, or the image's config when the index gives none).
func indexImages(idx v1.ImageIndex, where string, depth int) ([]candidate, error) {
	if depth > 4 {
		return nil, fmt.Errorf("%s: indexes nested deeper than 4", where)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	var out []candidate
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err == nil {
				var raw []byte
				if raw, err = child.RawManifest(); err == nil {
					err = checkDigest("index blob "+d.Digest.String(), d.Digest, raw)
				}
			}
			if err != nil {
				return nil, fmt.Errorf("index blob %s: %w", d.Digest, err)
			}
			sub, err := indexImages(child, "index blob "+d.Digest.String(), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("manifest blob %s: %w", d.Digest, err)
			}
			c := candidate{digest: d.Digest, img: img}
			if d.Platform != nil {
				c.platform = *d.Platform
			} else {
				// The platform from the config, each checked before it
				// is parsed.
				raw, err := img.RawManifest()
				if err == nil {
					err = checkDigest("manifest blob "+d.Digest.String(), d.Digest, raw)
				}
				if err != nil {
					return nil, fmt.Errorf("manifest blob %s: %w", d.Digest, err)
				}
				m, err := img.Manifest()
				if err != nil {
					return nil, fmt.Errorf("manifest blob %s: %w", d.Digest, err)
				}
				cf, err := verifiedConfig(img, m.Config.Digest.String(), &m.Config.Digest)
				if err != nil {
					return nil, err
				}
				if p := cf.Platform(); p != nil {
					c.platform = *p
				}
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// pick takes the candidate that fits arch best, or says what there is.
func pick(cands []candidate, where string, arch ovlayout.Arch) (candidate, error) {
	best, rank := -1, -1
	var have []string
	for i, c := range cands {
		if c.platform.OS == "unknown" { // buildx's attestations: not images
			continue
		}
		have = append(have, c.platform.String())
		if r := platformRank(c.platform, arch); r >= 0 && (rank < 0 || r < rank) {
			best, rank = i, r
		}
	}
	if best < 0 {
		if len(have) == 0 {
			return candidate{}, fmt.Errorf("%s lists no image", where)
		}
		return candidate{}, fmt.Errorf("%s has %s; the image is for %s (%s)", where, strings.Join(have, ", "), arch, ociPlatform(arch).String())
	}
	return cands[best], nil
}

// readConfig reads an image's config, checks it against its digest
// (want, when known) and refuses one for another OS or arch, naming it.
func readConfig(img v1.Image, blob string, want *v1.Hash, arch ovlayout.Arch) (*v1.ConfigFile, error) {
	cf, err := verifiedConfig(img, blob, want)
	if err != nil {
		return nil, err
	}
	p := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	if cf.OS != "linux" {
		return nil, fmt.Errorf("config blob %s is for OS %q (%s); ovroot builds linux images", blob, cf.OS, p.String())
	}
	if platformRank(p, arch) < 0 {
		return nil, fmt.Errorf("config blob %s is for %s; the image is for %s (%s)", blob, p.String(), arch, ociPlatform(arch).String())
	}
	return cf, nil
}

// verifiedConfig reads an image's config, checked against its digest
// (want, when known) before it is parsed.
func verifiedConfig(img v1.Image, blob string, want *v1.Hash) (*v1.ConfigFile, error) {
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config blob %s: %w", blob, err)
	}
	if want != nil {
		if err := checkDigest("config blob "+blob, *want, raw); err != nil {
			return nil, err
		}
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("config blob %s: %w", blob, err)
	}
	return cf, nil
}

func checkDigest(what string, want v1.Hash, b []byte) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("%s: digest algorithm %q is not supported (sha256)", what, want.Algorithm)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != want.Hex {
		return fmt.Errorf("%s does not match its digest (its bytes hash to sha256:%s)", what, got)
	}
	return nil
}

// fromDockerSave picks the image for arch from a docker save tarball: the
// only one, or among several the one whose config fits. docker save has
// no manifest blob; the config is checked against the name docker gives
// it (its sha256), each layer against its config's diff_id.
func fromDockerSave(p string, arch ovlayout.Arch) (*containerImage, error) {
	open := func() (io.ReadCloser, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		r, done, err := decompress(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		return readCloser{r, closeFunc(func() error { done(); return f.Close() })}, nil
	}
	m, err := tarball.LoadManifest(open)
	if err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	var cands []candidate
	var descs []tarball.Descriptor
	for _, d := range m {
		var tag *name.Tag
		if len(m) > 1 {
			if len(d.RepoTags) == 0 {
				continue // tarball.Image finds an image of several by its tag only
			}
			t, err := name.NewTag(d.RepoTags[0])
			if err != nil {
				return nil, fmt.Errorf("manifest.json: tag %q: %w", d.RepoTags[0], err)
			}
			tag = &t
		}
		img, err := tarball.Image(open, tag)
		if err != nil {
			return nil, fmt.Errorf("manifest.json image %s: %w", d.Config, err)
		}
		cf, err := verifiedConfig(img, d.Config, dockerConfigHash(d.Config))
		if err != nil {
			return nil, err
		}
		c := candidate{img: img}
		if pl := cf.Platform(); pl != nil {
			c.platform = *pl
		}
		cands = append(cands, c)
		descs = append(descs, d)
	}
	c, err := pick(cands, "manifest.json", arch)
	if err != nil {
		return nil, err
	}
	var d tarball.Descriptor
	for i := range cands {
		if cands[i].img == c.img {
			d = descs[i]
		}
	}
	cf, err := readConfig(c.img, d.Config, dockerConfigHash(d.Config), arch)
	if err != nil {
		return nil, err
	}
	if len(d.Layers) != len(cf.RootFS.DiffIDs) {
		return nil, fmt.Errorf("manifest.json lists %d layers, config %s %d diff_ids", len(d.Layers), d.Config, len(cf.RootFS.DiffIDs))
	}
	layers, err := c.img.Layers()
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", d.Config, err)
	}
	raw, _ := c.img.RawConfigFile()
	sum := sha256.Sum256(raw)
	img := &containerImage{platform: *cf.Platform(), digest: "config sha256:" + hex.EncodeToString(sum[:])}
	for i, l := range layers {
		l, diffID := l, cf.RootFS.DiffIDs[i]
		img.layers = append(img.layers, verifiedLayer(fmt.Sprintf("layer %d/%d %s (diff_id %s)", i+1, len(layers), d.Layers[i], diffID),
			l.Uncompressed, nil, diffID))
	}
	return img, nil
}

// dockerConfigHash is the digest docker save names a config by (its
// sha256), nil for a name that is none.
func dockerConfigHash(name string) *v1.Hash {
	if m := configHex.FindStringSubmatch(path.Base(name)); m != nil {
		return &v1.Hash{Algorithm: "sha256", Hex: m[1]}
	}
	return nil
}

type closeFunc func() error

func (c closeFunc) Close() error { return c() }

// verifiedLayer reads a layer blob (compressed or not: decompress sees)
// and checks it twice: a first pass hashes the whole blob against its
// digest (blob, when the format names one; else diffID, the uncompressed
// tar's), so no byte of a blob that does not match is unpacked; the read
// that unpacks hashes again, the blob and the uncompressed tar (diffID),
// and finish refuses a mismatch (a file changed between the two reads).
func verifiedLayer(label string, open func() (io.ReadCloser, error), blob *v1.Hash, diffID v1.Hash) tarLayer {
	l := tarLayer{name: label, whiteouts: true}
	l.open = func(ctx context.Context) (io.Reader, func(bool) error, error) {
		// The first pass.
		rc, err := open()
		if err != nil {
			return nil, nil, err
		}
		want, which := diffID, "diff_id"
		var src io.Reader = ctxReader{ctx, rc}
		var done func()
		if blob != nil {
			want, which = *blob, "digest"
		} else if src, done, err = decompress(src); err != nil {
			rc.Close()
			return nil, nil, err
		}
		err = hashCheck(src, want, which)
		if done != nil {
			done()
		}
		rc.Close()
		if err != nil {
			return nil, nil, err
		}
		// The read that unpacks.
		if rc, err = open(); err != nil {
			return nil, nil, err
		}
		bh := sha256.New()
		braw := io.TeeReader(ctxReader{ctx, rc}, bh)
		dec, done2, err := decompress(braw)
		if err != nil {
			rc.Close()
			return nil, nil, err
		}
		uh := sha256.New()
		tarStream := io.TeeReader(dec, uh)
		closed := false
		finish := func(complete bool) error {
			if closed {
				return nil
			}
			closed = true
			defer rc.Close()
			defer done2()
			if !complete {
				return nil
			}
			// What the tar reader left (end-of-archive blocks, padding),
			// then what the decompressor left.
			if _, err := io.Copy(io.Discard, tarStream); err != nil {
				return err
			}
			if _, err := io.Copy(io.Discard, braw); err != nil {
				return err
			}
			if err := sumIs(bh, want, which, blob != nil); err != nil {
				return err
			}
			return sumIs(uh, diffID, "diff_id", true)
		}
		return tarStream, finish, nil
	}
	return l
}

// hashCheck reads r to its end and compares its sha256 with want.
func hashCheck(r io.Reader, want v1.Hash, which string) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return err
	}
	return sumIs(h, want, which, true)
}

func sumIs(h hash.Hash, want v1.Hash, which string, check bool) error {
	if !check {
		return nil
	}
	if want.Algorithm != "sha256" {
		return fmt.Errorf("%s algorithm %q is not supported (sha256)", which, want.Algorithm)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("the blob does not match its %s %s (its bytes hash to sha256:%s)", which, want, got)
	}
	return nil
}
