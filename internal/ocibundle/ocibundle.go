// Package ocibundle publishes ovroot update bundles to an OCI registry and
// fetches them back, on the host, through go-containerregistry's remote
// package. A bundle is an OCI artifact (image-spec v1.1 "Guidelines for
// Artifact Usage"): an image manifest with artifactType
// ocifetch.ArtifactType, the empty config, and the bundle file unchanged as
// its one layer, annotated with what the bundle's manifest says (version,
// arch, board, build id), so a registry's UI shows them.
//
// Devices do not link this package (go-containerregistry costs megabytes):
// ovrootctl pulls with internal/ocifetch, which checks manifests with the
// same ocifetch.BundleLayer.
package ocibundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/ovroot/ovroot/internal/ocifetch"
	"github.com/ovroot/ovroot/slot"
)

// Annotation keys besides the org.opencontainers.image.* ones.
const (
	AnnotationArch    = "org.ovroot.arch"
	AnnotationBoard   = "org.ovroot.board"
	AnnotationLoader  = "org.ovroot.loader"
	AnnotationBuildID = "org.ovroot.build-id"
	AnnotationKernel  = "org.ovroot.kernel-release"
	AnnotationFormat  = "org.ovroot.bundle-format"
)

// Options tune Push and Pull.
type Options struct {
	// PlainHTTP talks to the registry over http:// (a lab registry).
	PlainHTTP bool
	// Keychain finds credentials; nil is authn.DefaultKeychain (the docker
	// config, ~/.docker/config.json and its credential helpers).
	Keychain authn.Keychain
}

func (o Options) parse(ref string) (name.Reference, []remote.Option, error) {
	var nopts []name.Option
	if o.PlainHTTP {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, append(nopts, name.StrictValidation)...)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w (want REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...)", ref, err)
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	return r, []remote.Option{remote.WithAuthFromKeychain(kc)}, nil
}

// Pushed is what Push published.
type Pushed struct {
	Ref         string // the reference pushed to
	Digest      string // the manifest's: REPO@DIGEST names it for good
	BlobDigest  string // the bundle's
	Size        int64
	Annotations map[string]string
}

// Push publishes the bundle file at path as ref (REGISTRY/REPO:TAG).
func Push(ctx context.Context, path, ref string, o Options) (Pushed, error) {
	r, ropts, err := o.parse(ref)
	if err != nil {
		return Pushed{}, err
	}
	if _, ok := r.(name.Tag); !ok {
		return Pushed{}, fmt.Errorf("%s: push to a tag (REGISTRY/REPO:TAG), not a digest: the digest is what push prints", ref)
	}
	ropts = append(ropts, remote.WithContext(ctx))
	m, err := readManifest(path)
	if err != nil {
		return Pushed{}, err
	}
	sum, size, err := hashFile(path)
	if err != nil {
		return Pushed{}, err
	}
	blob, err := partial.CompressedToLayer(&fileLayer{path: path, digest: sum, size: size})
	if err != nil {
		return Pushed{}, err
	}
	if err := remote.WriteLayer(r.Context(), blob, ropts...); err != nil {
		return Pushed{}, fmt.Errorf("push %s's bundle blob to %s: %w", path, r.Context(), err)
	}
	empty := static.NewLayer([]byte("{}"), ocifetch.EmptyConfigMediaType)
	if err := remote.WriteLayer(r.Context(), empty, ropts...); err != nil {
		return Pushed{}, fmt.Errorf("push the empty config to %s: %w", r.Context(), err)
	}
	ann := annotations(m)
	man := ocifetch.Manifest{
		SchemaVersion: 2,
		MediaType:     ocifetch.ManifestMediaType,
		ArtifactType:  ocifetch.ArtifactType,
		Config:        ocifetch.Descriptor{MediaType: ocifetch.EmptyConfigMediaType, Digest: "sha256:" + emptyDigest, Size: 2},
		Layers: []ocifetch.Descriptor{{MediaType: ocifetch.BundleMediaType, Digest: sum.String(), Size: size,
			Annotations: map[string]string{"org.opencontainers.image.title": filepath.Base(path)}}},
		Annotations: ann,
	}
	raw, err := json.Marshal(man)
	if err != nil {
		return Pushed{}, err
	}
	if err := remote.Put(r, rawManifest(raw), ropts...); err != nil {
		return Pushed{}, fmt.Errorf("push the manifest to %s: %w", ref, err)
	}
	return Pushed{Ref: r.Name(), Digest: fmt.Sprintf("sha256:%x", sha256.Sum256(raw)), BlobDigest: sum.String(), Size: size, Annotations: ann}, nil
}

// emptyDigest is the SHA-256 of "{}", the OCI empty descriptor's.
const emptyDigest = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

// annotations are the bundle manifest's facts under the keys registry UIs
// show (image-spec annotations.md) and ours.
func annotations(m slot.Manifest) map[string]string {
	board := m.Board
	if board == "" {
		board = slot.DefaultBoard
	}
	a := map[string]string{
		"org.opencontainers.image.version": m.Version,
		"org.opencontainers.image.title":   fmt.Sprintf("ovroot update bundle %s (%s, %s)", m.Version, m.Arch, board),
		AnnotationArch:                     string(m.Arch),
		AnnotationBoard:                    board,
		AnnotationLoader:                   string(m.Loader),
		AnnotationBuildID:                  m.BuildID,
		AnnotationFormat:                   fmt.Sprint(m.Format),
	}
	if !m.Created.IsZero() {
		a["org.opencontainers.image.created"] = m.Created.UTC().Format(time.RFC3339)
	}
	if m.KernelRelease != "" {
		a[AnnotationKernel] = m.KernelRelease
	}
	return a
}

// readManifest reads the bundle's manifest (its first member) for the
// annotations and refuses a file that is not a bundle. The signature is
// not checked here: devices check it; `ovroot verify` does on the host.
func readManifest(path string) (slot.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return slot.Manifest{}, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	h, err := tr.Next()
	if err != nil || h.Name != slot.ManifestName || h.Size > 1<<20 {
		return slot.Manifest{}, fmt.Errorf("%s is not an ovroot update bundle (its first member is not %s; make one with ovroot build --update FILE)", path, slot.ManifestName)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return slot.Manifest{}, fmt.Errorf("%s: %w", path, err)
	}
	var m slot.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return slot.Manifest{}, fmt.Errorf("%s: bundle manifest: %w", path, err)
	}
	if err := m.Check(); err != nil {
		return slot.Manifest{}, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func hashFile(path string) (v1.Hash, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("read %s: %w", path, err)
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, n, nil
}

// fileLayer is the bundle file as a blob, read from disk as it uploads
// (a root can be hundreds of MiB: it is not held in memory).
type fileLayer struct {
	path   string
	digest v1.Hash
	size   int64
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return ocifetch.BundleMediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return ocifetch.ManifestMediaType, nil }

// Pulled is what Pull fetched.
type Pulled struct {
	Digest      string // the manifest's
	BlobDigest  string
	Size        int64
	Annotations map[string]string
}

// Pull fetches the bundle ref names into the file out (written to
// out.tmp and renamed when its digest checked out). A reference that is
// not an ovroot bundle is refused naming what it is.
func Pull(ctx context.Context, ref, out string, o Options) (Pulled, error) {
	r, ropts, err := o.parse(ref)
	if err != nil {
		return Pulled{}, err
	}
	ropts = append(ropts, remote.WithContext(ctx))
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return Pulled{}, fmt.Errorf("%s: %w", ref, err)
	}
	what := ref
	if d, ok := r.(name.Digest); ok {
		what = d.Context().String() + "@" + d.DigestStr()
	}
	layer, err := ocifetch.BundleLayer(what, desc.Manifest, string(desc.MediaType))
	if err != nil {
		return Pulled{}, err
	}
	var man ocifetch.Manifest
	json.Unmarshal(desc.Manifest, &man)
	blob, err := remote.Layer(r.Context().Digest(layer.Digest), ropts...)
	if err != nil {
		return Pulled{}, fmt.Errorf("%s: the bundle's blob %s: %w", ref, layer.Digest, err)
	}
	rc, err := blob.Compressed()
	if err != nil {
		return Pulled{}, fmt.Errorf("%s: the bundle's blob %s: %w", ref, layer.Digest, err)
	}
	defer rc.Close()
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Pulled{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), rc)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); err == nil && (got != layer.Digest || n != layer.Size) {
		err = fmt.Errorf("the blob arrived as %s, %d bytes; its manifest says %s, %d bytes", got, n, layer.Digest, layer.Size)
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		os.Remove(tmp)
		return Pulled{}, fmt.Errorf("%s: the bundle's blob %s to %s: %w", ref, layer.Digest, out, err)
	}
	return Pulled{Digest: desc.Digest.String(), BlobDigest: layer.Digest, Size: n, Annotations: man.Annotations}, nil
}
