package ocibundle

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/ovroot/ovroot/internal/ocifetch"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// testBundle writes a small unsigned bundle of version 7 to dir.
func testBundle(t *testing.T, dir string) string {
	t.Helper()
	src := func(n string, d []byte) slot.Source {
		return slot.Source{Name: n, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d)), nil }}
	}
	var b bytes.Buffer
	m := slot.Manifest{Arch: layout.ARM64, Board: "rpi4", Loader: layout.LoaderUBoot, Tries: 3, Version: "7", KernelRelease: "6.1.0-test", Created: time.Unix(1700000000, 0)}
	if err := slot.WriteBundle(&b, m, []slot.Source{src(slot.RootName, bytes.Repeat([]byte("r"), 50000)), src(layout.KernelFile, []byte("k")), src(layout.InitrdFile, []byte("i"))}, nil); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "update.bundle")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startRegistry is go-containerregistry's in-memory registry on
// 127.0.0.1; it returns its host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

var plain = Options{PlainHTTP: true, Keychain: authn.NewMultiKeychain()}

func TestPushPull(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bundle := testBundle(t, dir)
	reg := startRegistry(t)
	ref := reg + "/fleet/firmware:7"
	p, err := Push(ctx, bundle, ref, plain)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Digest, "sha256:") {
		t.Errorf("Push digest = %q", p.Digest)
	}

	r, _ := name.ParseReference(ref, name.Insecure)
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != p.Digest {
		t.Errorf("registry digest %s, Push said %s", desc.Digest, p.Digest)
	}
	var m ocifetch.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != ocifetch.ManifestMediaType || m.ArtifactType != ocifetch.ArtifactType || m.Config.MediaType != ocifetch.EmptyConfigMediaType {
		t.Errorf("manifest media types %q, artifactType %q, config %q", m.MediaType, m.ArtifactType, m.Config.MediaType)
	}
	data, _ := os.ReadFile(bundle)
	if len(m.Layers) != 1 || m.Layers[0].MediaType != ocifetch.BundleMediaType || m.Layers[0].Size != int64(len(data)) {
		t.Errorf("layers %+v", m.Layers)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version": "7",
		"org.opencontainers.image.created": "2023-11-14T22:13:20Z",
		AnnotationArch:                     "arm64",
		AnnotationBoard:                    "rpi4",
		AnnotationLoader:                   "uboot",
		AnnotationKernel:                   "6.1.0-test",
		AnnotationBuildID:                  slot.BuildIDOf(bytes.Repeat([]byte("r"), 50000)),
	} {
		if got := m.Annotations[k]; got != want {
			t.Errorf("annotation %s = %q, want %q", k, got, want)
		}
	}

	for _, from := range []string{ref, reg + "/fleet/firmware@" + p.Digest} {
		out := filepath.Join(dir, "pulled.bundle")
		os.Remove(out)
		got, err := Pull(ctx, from, out, plain)
		if err != nil {
			t.Fatalf("Pull(%s): %v", from, err)
		}
		if b, _ := os.ReadFile(out); !bytes.Equal(b, data) {
			t.Errorf("Pull(%s) wrote %d bytes, not the %d pushed", from, len(b), len(data))
		}
		if got.Digest != p.Digest || got.Annotations["org.opencontainers.image.version"] != "7" {
			t.Errorf("Pull(%s) = %+v", from, got)
		}
	}
}

func TestPullRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	reg := startRegistry(t)
	img, err := random.Image(100, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(reg+"/fleet/app:1", name.Insecure)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "x.bundle")
	for _, tc := range []struct{ name, ref, want string }{
		{"a container image", reg + "/fleet/app:1", "has media type application/vnd.docker.distribution.manifest.v2+json, not an ovroot bundle"},
		{"no such tag", reg + "/fleet/app:2", reg + "/fleet/app:2: "},
		{"no such repo", reg + "/fleet/none:1", reg + "/fleet/none:1: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Pull(ctx, tc.ref, out, plain)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Pull(%s) = %v, want an error containing %q", tc.ref, err, tc.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("a refused pull wrote %s", out)
			}
		})
	}
	if _, err := Push(ctx, filepath.Join(dir, "missing"), reg+"/fleet/x:1", plain); err == nil {
		t.Error("Push of a missing file succeeded")
	}
	os.WriteFile(filepath.Join(dir, "junk"), []byte("hello"), 0o644)
	if _, err := Push(ctx, filepath.Join(dir, "junk"), reg+"/fleet/x:1", plain); err == nil || !strings.Contains(err.Error(), "is not an ovroot update bundle") {
		t.Errorf("Push of junk = %v", err)
	}
}
