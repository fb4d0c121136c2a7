package ocifetch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/ovroot/ovroot/internal/ocibundle"
	"github.com/ovroot/ovroot/internal/ocifetch"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

func writeBundle(t *testing.T) (string, []byte) {
	t.Helper()
	src := func(n string, d []byte) slot.Source {
		return slot.Source{Name: n, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d)), nil }}
	}
	var b bytes.Buffer
	m := slot.Manifest{Arch: layout.ARM64, Loader: layout.LoaderUEFI, Tries: 3, Version: "7", Created: time.Unix(0, 0)}
	if err := slot.WriteBundle(&b, m, []slot.Source{src(slot.RootName, bytes.Repeat([]byte("r"), 300000)), src(layout.KernelFile, []byte("k")), src(layout.InitrdFile, []byte("i"))}, nil); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "update.bundle")
	os.WriteFile(p, b.Bytes(), 0o644)
	return p, b.Bytes()
}

// fixture is an in-process registry holding a pushed bundle at
// fleet/fw:7 and a container image at fleet/app:1, behind wrap.
type fixture struct {
	host   string // host:port
	data   []byte
	digest string // the bundle manifest's
}

func newFixture(t *testing.T, wrap func(http.Handler) http.Handler) fixture {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var h http.Handler = reg
	if wrap != nil {
		h = wrap(reg)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	// Push straight to the registry, around the wrapper.
	direct := httptest.NewServer(reg)
	t.Cleanup(direct.Close)
	dhost := strings.TrimPrefix(direct.URL, "http://")
	path, data := writeBundle(t)
	p, err := ocibundle.Push(context.Background(), path, dhost+"/fleet/fw:7", ocibundle.Options{PlainHTTP: true, Keychain: authn.NewMultiKeychain()})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(100, 1)
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	r, _ := name.ParseReference(dhost+"/fleet/app:1", name.Insecure)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return fixture{host: strings.TrimPrefix(s.URL, "http://"), data: data, digest: p.Digest}
}

func open(t *testing.T, ref string, o ocifetch.Options) ([]byte, error) {
	t.Helper()
	r, err := ocifetch.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	o.AllowHTTP = true
	o.Fetch.Sleep = func(context.Context, time.Duration) error { return nil }
	rd, err := ocifetch.Open(context.Background(), r, o)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

func TestOpen(t *testing.T) {
	f := newFixture(t, nil)
	for _, ref := range []string{"oci://" + f.host + "/fleet/fw:7", f.host + "/fleet/fw@" + f.digest} {
		got, err := open(t, ref, ocifetch.Options{})
		if err != nil || !bytes.Equal(got, f.data) {
			t.Errorf("Open(%s) = %d bytes, %v; want the %d pushed", ref, len(got), err, len(f.data))
		}
	}
	for _, tc := range []struct{ name, ref, want string }{
		{"no such tag", f.host + "/fleet/fw:8", "oci://" + f.host + "/fleet/fw:8: not found in the registry (MANIFEST_UNKNOWN"},
		{"a container image", f.host + "/fleet/app:1", "is not an ovroot bundle: its manifest has config application/vnd.docker.container.image.v1+json and layers [application/vnd.docker.image.rootfs.diff.tar.gzip]"},
		{"another digest", f.host + "/fleet/fw@sha256:" + strings.Repeat("0", 64), "not found in the registry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := open(t, tc.ref, ocifetch.Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%s) = %v, want an error containing %q", tc.ref, err, tc.want)
			}
		})
	}
	// Without AllowHTTP a plain-http registry is refused.
	r, _ := ocifetch.ParseRef(f.host + "/fleet/fw:7")
	if _, err := ocifetch.Open(context.Background(), r, ocifetch.Options{}); err == nil || !strings.Contains(err.Error(), "HTTP response to HTTPS client") {
		t.Errorf("Open without AllowHTTP = %v", err)
	}
}

// TestBearerAndRedirect: a registry that demands a token (realm on the
// same server) and redirects blobs to a CDN on another host; the token
// reaches the registry and never the CDN.
func TestBearerAndRedirect(t *testing.T) {
	var mu sync.Mutex
	var cdnAuth []string
	var tokenAsks []string
	var origin http.Handler
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cdnAuth = append(cdnAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		// The CDN serves what the registry holds, unauthenticated.
		r2 := r.Clone(r.Context())
		r2.Header.Set("X-From-Cdn", "1")
		origin.ServeHTTP(w, r2)
	}))
	t.Cleanup(cdn.Close)
	var self string
	f := newFixture(t, func(reg http.Handler) http.Handler {
		origin = reg
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				mu.Lock()
				tokenAsks = append(tokenAsks, r.URL.RawQuery)
				mu.Unlock()
				if u, p, _ := r.BasicAuth(); u != "" && (u != "dev" || p != "secret") {
					http.Error(w, "bad password", http.StatusUnauthorized)
					return
				}
				json.NewEncoder(w).Encode(map[string]string{"token": "tok123"})
				return
			}
			if r.Header.Get("Authorization") != "Bearer tok123" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+self+`/token",service="test-registry",scope="repository:fleet/fw:pull"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
				return
			}
			if strings.Contains(r.URL.Path, "/blobs/") {
				http.Redirect(w, r, cdn.URL+r.URL.Path+"?sig=abc", http.StatusTemporaryRedirect)
				return
			}
			reg.ServeHTTP(w, r)
		})
	})
	self = f.host
	got, err := open(t, f.host+"/fleet/fw:7", ocifetch.Options{})
	if err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("Open = %d bytes, %v; want the %d pushed", len(got), err, len(f.data))
	}
	if len(cdnAuth) == 0 {
		t.Fatal("the blob did not come from the CDN")
	}
	for _, a := range cdnAuth {
		if a != "" {
			t.Errorf("the CDN received Authorization %q", a)
		}
	}
	if len(tokenAsks) != 1 || !strings.Contains(tokenAsks[0], "service=test-registry") || !strings.Contains(tokenAsks[0], "scope=repository%3Afleet%2Ffw%3Apull") {
		t.Errorf("token requests %q", tokenAsks)
	}
	// With credentials, the token endpoint gets them (Basic).
	o := ocifetch.Options{Credentials: map[string]ocifetch.Credential{f.host: {Username: "dev", Password: "wrong"}}}
	if _, err := open(t, f.host+"/fleet/fw:7", o); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("Open with a wrong password = %v, want the token endpoint's 401", err)
	}
	o.Credentials[f.host] = ocifetch.Credential{Username: "dev", Password: "secret"}
	if got, err := open(t, f.host+"/fleet/fw:7", o); err != nil || !bytes.Equal(got, f.data) {
		t.Errorf("Open with credentials = %d bytes, %v", len(got), err)
	}
}

// TestCorruptBlob: a blob whose bytes differ from its digest is refused
// at its end, as is one cut short with a matching length promise.
func TestCorruptBlob(t *testing.T) {
	f := newFixture(t, func(reg http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.Contains(r.URL.Path, "/blobs/") {
				reg.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			reg.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			if len(body) > 2000 {
				body[1500] ^= 1
			}
			w.Header().Set("Content-Length", rec.Header().Get("Content-Length"))
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	})
	_, err := open(t, f.host+"/fleet/fw:7", ocifetch.Options{})
	if err == nil || !strings.Contains(err.Error(), "arrived with sha256:") {
		t.Errorf("Open of a corrupt blob = %v, want a digest mismatch", err)
	}
}

func TestParseRef(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in   string
		want ocifetch.Ref
		err  string
	}{
		{"oci://ghcr.io/acme/fw:1.2", ocifetch.Ref{Registry: "ghcr.io", Repo: "acme/fw", Tag: "1.2"}, ""},
		{"localhost:5000/fw@" + d, ocifetch.Ref{Registry: "localhost:5000", Repo: "fw", Digest: d}, ""},
		{"docker.io/fw:1", ocifetch.Ref{Registry: "registry-1.docker.io", Repo: "library/fw", Tag: "1"}, ""},
		{"acme/fw:1", ocifetch.Ref{}, "with the registry's host name first"},
		{"ghcr.io/acme/fw", ocifetch.Ref{}, "no tag or digest"},
		{"ghcr.io/Acme/fw:1", ocifetch.Ref{}, "is not a valid name"},
		{"ghcr.io/acme/fw@sha256:12", ocifetch.Ref{}, "64 lower-case hex"},
	} {
		got, err := ocifetch.ParseRef(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRef(%q) = %v, want an error containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRef(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestReadCredentials(t *testing.T) {
	p := filepath.Join(t.TempDir(), "auth.json")
	if c, err := ocifetch.ReadCredentials(p); err != nil || c != nil {
		t.Errorf("missing file: %v, %v", c, err)
	}
	os.WriteFile(p, []byte(`{"ghcr.io": {"username": "u", "password": "p"}}`), 0o644)
	os.Chmod(p, 0o644)
	if _, err := ocifetch.ReadCredentials(p); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("a world-readable file: %v, want it refused", err)
	}
	os.Chmod(p, 0o600)
	c, err := ocifetch.ReadCredentials(p)
	if err != nil || c["ghcr.io"].Username != "u" || c["ghcr.io"].Password != "p" {
		t.Errorf("ReadCredentials = %v, %v", c, err)
	}
}
