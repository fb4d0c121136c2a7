//go:build !ovroot_nonet

package ctl

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/ovroot/ovroot/internal/ocibundle"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// ociRegistry is an in-process registry holding a bundle at fleet/fw:7;
// corrupt, if set, flips the last byte of blobs it serves (inside the
// tar trailer, where no member checksum looks).
func ociRegistry(t *testing.T, corrupt bool) (host string, data []byte) {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !corrupt || !strings.Contains(r.URL.Path, "/blobs/") || r.Method != http.MethodGet {
			reg.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		body[len(body)-1] ^= 1
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	direct := httptest.NewServer(reg)
	t.Cleanup(direct.Close)
	src := func(n string, d []byte) slot.Source {
		return slot.Source{Name: n, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d)), nil }}
	}
	var b bytes.Buffer
	m := slot.Manifest{Arch: layout.ARM64, Loader: layout.LoaderUEFI, Tries: 3, Version: "7", Created: time.Unix(0, 0)}
	if err := slot.WriteBundle(&b, m, []slot.Source{src(slot.RootName, bytes.Repeat([]byte("r"), 200_000)), src(layout.KernelFile, []byte("k")), src(layout.InitrdFile, []byte("i"))}, nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "u.bundle")
	os.WriteFile(path, b.Bytes(), 0o644)
	if _, err := ocibundle.Push(context.Background(), path, strings.TrimPrefix(direct.URL, "http://")+"/fleet/fw:7", ocibundle.Options{PlainHTTP: true, Keychain: authn.NewMultiKeychain()}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(s.URL, "http://"), b.Bytes()
}

// TestBundleSourceOCI: upgrade oci://... reads the bundle from a registry
// in both passes, as the bundle reader reads it; a blob whose digest does
// not match is refused even where no member checksum would notice.
func TestBundleSourceOCI(t *testing.T) {
	host, data := ociRegistry(t, false)
	root := t.TempDir()
	c := Context{Root: root, NetSleep: noSleep}
	lab := layout.UpdatePolicy{AllowHTTP: true}
	ref := "oci://" + host + "/fleet/fw:7"
	src, err := c.bundleSource(context.Background(), ref, lab, nil)
	if err != nil {
		t.Fatal(err)
	}
	for pass := 1; pass <= 2; pass++ {
		r, err := src.Open()
		if err != nil {
			t.Fatalf("open %d: %v", pass, err)
		}
		_, err = slot.Verify(r, slot.Trust{AllowUnsigned: true})
		r.Close()
		if err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
	}

	open := func(ref string, pol layout.UpdatePolicy) ([]byte, error) {
		src, err := c.bundleSource(context.Background(), ref, pol, nil)
		if err != nil {
			return nil, err
		}
		r, err := src.Open()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	if got, err := open(ref, lab); err != nil || !bytes.Equal(got, data) {
		t.Errorf("read %d bytes, %v; want the %d pushed", len(got), err, len(data))
	}
	if _, err := open(ref, layout.UpdatePolicy{}); err == nil || !strings.Contains(err.Error(), "HTTP response to HTTPS client") {
		t.Errorf("a plain-http registry without allow_http: %v, want it refused", err)
	}
	if _, err := open("oci://"+host+"/fleet/fw:8", lab); err == nil || !strings.Contains(err.Error(), "oci://"+host+"/fleet/fw:8: not found in the registry") {
		t.Errorf("a missing tag: %v", err)
	}

	auth := filepath.Join(root, "etc/ovroot/registry-auth.json")
	os.MkdirAll(filepath.Dir(auth), 0o755)
	os.WriteFile(auth, []byte(`{}`), 0o644)
	os.Chmod(auth, 0o644)
	if _, err := open(ref, lab); err == nil || !strings.Contains(err.Error(), "registry-auth.json has mode 0644") {
		t.Errorf("a readable credentials file: %v, want it refused", err)
	}
	os.Chmod(auth, 0o600)
	if _, err := open(ref, lab); err != nil {
		t.Errorf("with a 0600 credentials file: %v", err)
	}

	bad, _ := ociRegistry(t, true)
	src, err = c.bundleSource(context.Background(), "oci://"+bad+"/fleet/fw:7", lab, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := src.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := slot.Verify(r, slot.Trust{AllowUnsigned: true}); err == nil || !strings.Contains(err.Error(), "arrived with sha256:") {
		t.Errorf("a blob corrupted in its tar trailer: %v, want its digest mismatch", err)
	}
}
