// Package ocifetch reads an ovroot update bundle published as an OCI
// artifact (by `ovroot push`) straight from a registry, with nothing but
// net/http: it is what ovrootctl links for `upgrade oci://...`, where
// go-containerregistry would cost megabytes.
//
// It speaks the pull half of the OCI distribution spec (distribution-spec
// v1.1 §"Pulling manifests", §"Pulling blobs") and the token flow registries
// use for it (the Docker registry token spec: a 401 with
// `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, a GET of the
// realm, the token sent back as `Authorization: Bearer`). It fetches one
// manifest, checks that it is an ovroot bundle (ArtifactType, BundleMediaType),
// and streams its one layer through netfetch, which resumes and follows a
// redirect to a CDN; the layer's SHA-256 is checked as the bytes arrive.
//
// It does not push, list, cache, or read image indexes or Docker schema 1/2
// manifests; the host tool (internal/cli, with go-containerregistry) pushes.
package ocifetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"

	"github.com/ovroot/ovroot/internal/netfetch"
)

// The media types of an ovroot bundle artifact: an OCI image manifest
// (image-spec v1.1 "artifacts" guidance) whose artifactType is
// ArtifactType, whose config is the empty descriptor, and whose one layer
// is the bundle file as it is (an uncompressed tar), of type
// BundleMediaType.
const (
	ArtifactType         = "application/vnd.ovroot.bundle.v1"
	BundleMediaType      = "application/vnd.ovroot.bundle.v1.tar"
	ManifestMediaType    = "application/vnd.oci.image.manifest.v1+json"
	EmptyConfigMediaType = "application/vnd.oci.empty.v1+json"
)

// maxManifest bounds a manifest read into memory (the distribution spec
// lets registries refuse more than 4 MiB).
const maxManifest = 4 << 20

// Ref is REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:HEX.
type Ref struct {
	Registry string // host[:port] as written
	Repo     string
	Tag      string // "" when Digest is set
	Digest   string // "sha256:..." or ""
}

var (
	repoRE   = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// ParseRef parses a reference, with or without the oci:// prefix. The
// registry must be named: there is no default registry.
func ParseRef(s string) (Ref, error) {
	in := s
	s = strings.TrimPrefix(s, "oci://")
	var r Ref
	if name, d, ok := strings.Cut(s, "@"); ok {
		if !digestRE.MatchString(d) {
			return Ref{}, fmt.Errorf("%s: digest %q is not sha256: and 64 lower-case hex digits", in, d)
		}
		s, r.Digest = name, d
	}
	reg, repo, ok := strings.Cut(s, "/")
	if !ok || reg == "" || !strings.ContainsAny(reg, ".:") && reg != "localhost" {
		return Ref{}, fmt.Errorf("%s: want REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:..., with the registry's host name first (e.g. ghcr.io/acme/firmware:1.2)", in)
	}
	r.Registry = reg
	if i := strings.LastIndex(repo, ":"); i >= 0 {
		if r.Digest != "" {
			return Ref{}, fmt.Errorf("%s: give a tag or a digest, not both", in)
		}
		repo, r.Tag = repo[:i], repo[i+1:]
		if !tagRE.MatchString(r.Tag) {
			return Ref{}, fmt.Errorf("%s: tag %q is not a valid tag", in, r.Tag)
		}
	}
	if r.Tag == "" && r.Digest == "" {
		return Ref{}, fmt.Errorf("%s: no tag or digest (add :TAG or @sha256:...)", in)
	}
	if !repoRE.MatchString(repo) {
		return Ref{}, fmt.Errorf("%s: repository %q is not a valid name (lower-case letters, digits, . _ - and /)", in, repo)
	}
	r.Repo = repo
	// Docker Hub's API lives on another host, and its official images
	// under library/.
	if r.Registry == "docker.io" || r.Registry == "index.docker.io" {
		r.Registry = "registry-1.docker.io"
		if !strings.Contains(r.Repo, "/") {
			r.Repo = "library/" + r.Repo
		}
	}
	return r, nil
}

// String is the reference as `oci://` takes it.
func (r Ref) String() string {
	if r.Digest != "" {
		return r.Registry + "/" + r.Repo + "@" + r.Digest
	}
	return r.Registry + "/" + r.Repo + ":" + r.Tag
}

func (r Ref) reference() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}

// Credential is a user name and password (or token) for one registry.
type Credential struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// ReadCredentials reads a JSON file mapping registry hosts to
// credentials, {"registry.example.com": {"username": "u", "password": "p"}}.
// A file that is missing is no credentials; one that group or others may
// read is refused: it holds passwords.
func ReadCredentials(path string) (map[string]Credential, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("registry credentials %s has mode %04o: refusing a password file others may read (chmod 600 it)", path, m)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", path, err)
	}
	var c map[string]Credential
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w (want {\"REGISTRY\": {\"username\": ..., \"password\": ...}})", path, err)
	}
	return c, nil
}

// Options tune Open.
type Options struct {
	// AllowHTTP lets a registry that answers plain HTTP on its port be
	// used over HTTP (a lab registry); HTTPS is tried first.
	AllowHTTP bool
	// Credentials by registry host, for the token endpoint (or a registry
	// that asks for Basic auth itself). None: anonymous pulls.
	Credentials map[string]Credential
	// Fetch tunes the blob's download (CA file, retries, progress, log).
	// Its Client, if set, is used for every request.
	Fetch netfetch.Options
}

// Open resolves ref to its manifest, checks it is an ovroot bundle and
// returns its layer as a stream whose SHA-256 and length are checked as
// it is read: the Read that reaches the end returns an error instead of
// io.EOF when they differ from the manifest's.
func Open(ctx context.Context, ref Ref, o Options) (*Reader, error) {
	client := o.Fetch.Client
	if client == nil {
		c, err := netfetch.NewClient(o.Fetch.CAFile)
		if err != nil {
			return nil, err
		}
		client = c
	}
	a := &auth{ref: ref, client: client, cred: o.Credentials[ref.Registry], scheme: "https"}
	raw, ct, err := a.manifest(ctx, o.AllowHTTP)
	if err != nil {
		return nil, err
	}
	layer, err := BundleLayer("oci://"+ref.String(), raw, ct)
	if err != nil {
		return nil, err
	}
	fo := o.Fetch
	// The token goes to the registry only, never to the host a blob
	// request is redirected to (a CDN with a signed URL): it is added
	// here, per request, by host, rather than set on the request that
	// netfetch follows through redirects.
	fo.Client = &http.Client{Transport: &authTransport{base: transport(client), a: a}, CheckRedirect: client.CheckRedirect, Jar: client.Jar}
	blobURL := a.url("blobs/" + layer.Digest)
	nr, err := netfetch.Open(ctx, blobURL, fo)
	if err != nil {
		return nil, fmt.Errorf("oci://%s: the bundle's blob %s: %w", ref, layer.Digest, err)
	}
	sum, _ := hex.DecodeString(strings.TrimPrefix(layer.Digest, "sha256:"))
	return &Reader{r: nr, ref: ref, Digest: layer.Digest, Size: layer.Size, want: sum, h: sha256.New()}, nil
}

// Descriptor is an OCI content descriptor (image-spec descriptor.md).
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Manifest is the part of an OCI image manifest (image-spec manifest.md)
// that a bundle artifact uses.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// BundleLayer checks that raw, the manifest the registry sent for name
// with Content-Type contentType, is an ovroot bundle artifact (and has
// the digest name asks for, if it names one) and returns its layer. An
// error says what name is instead.
func BundleLayer(name string, raw []byte, contentType string) (Descriptor, error) {
	if _, d, ok := strings.Cut(name, "@"); ok {
		if got := fmt.Sprintf("sha256:%x", sha256.Sum256(raw)); got != d {
			return Descriptor{}, fmt.Errorf("%s: the registry sent a manifest whose digest is %s", name, got)
		}
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return Descriptor{}, fmt.Errorf("%s: manifest: %w", name, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt, _, _ = strings.Cut(contentType, ";")
	}
	if mt != ManifestMediaType {
		return Descriptor{}, fmt.Errorf("%s has media type %s, not an ovroot bundle (an OCI image manifest with artifactType %s, as `ovroot push` makes)", name, mt, ArtifactType)
	}
	var types []string
	for _, l := range m.Layers {
		types = append(types, l.MediaType)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != BundleMediaType || m.ArtifactType != "" && m.ArtifactType != ArtifactType {
		what := "artifactType " + m.ArtifactType
		if m.ArtifactType == "" {
			what = "config " + m.Config.MediaType
		}
		return Descriptor{}, fmt.Errorf("%s is not an ovroot bundle: its manifest has %s and layers [%s], want artifactType %s and one layer %s", name, what, strings.Join(types, ", "), ArtifactType, BundleMediaType)
	}
	l := m.Layers[0]
	if !digestRE.MatchString(l.Digest) || l.Size <= 0 {
		return Descriptor{}, fmt.Errorf("%s: the bundle layer's digest %q (size %d) is not a sha256 digest this reader checks", name, l.Digest, l.Size)
	}
	return l, nil
}

// Reader is the bundle blob as it downloads.
type Reader struct {
	r      *netfetch.Reader
	ref    Ref
	Digest string // the layer's, from the manifest
	Size   int64
	want   []byte
	h      interface {
		io.Writer
		Sum([]byte) []byte
	}
	n   int64
	err error
}

// Read reads the blob, checking its length and at the end its SHA-256.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if r.n > r.Size {
		r.err = fmt.Errorf("oci://%s: blob %s is longer than the %d bytes its manifest says", r.ref, r.Digest, r.Size)
		return 0, r.err
	}
	if err == io.EOF || err == nil && r.n == r.Size {
		if r.n != r.Size {
			r.err = fmt.Errorf("oci://%s: blob %s ended after %d of its %d bytes", r.ref, r.Digest, r.n, r.Size)
			return n, r.err
		}
		if got := r.h.Sum(nil); !bytes.Equal(got, r.want) {
			r.err = fmt.Errorf("oci://%s: blob %s arrived with sha256:%x: refusing it", r.ref, r.Digest, got)
			return n, r.err
		}
		if err == nil {
			// Nothing may follow; the next Read says EOF.
			r.err = io.EOF
		}
	}
	return n, err
}

// Close ends the download.
func (r *Reader) Close() error { return r.r.Close() }

// Total is the blob's length.
func (r *Reader) Total() int64 { return r.Size }

func transport(c *http.Client) http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

// authTransport adds the registry's Authorization to requests for the
// registry's host, and to no other.
type authTransport struct {
	base http.RoundTripper
	a    *auth
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if h := t.a.header(); h != "" && req.URL.Host == t.a.host() {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", h)
	}
	return t.base.RoundTrip(req)
}
