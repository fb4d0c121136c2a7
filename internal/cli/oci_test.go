package cli

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// ovroot push publishes a bundle and prints its digest; ovroot pull
// fetches it back byte for byte, by tag or by that digest.
func TestPushPull(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials of the user's
	s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer s.Close()
	reg := strings.TrimPrefix(s.URL, "http://")

	var b bytes.Buffer
	src := func(n string, d []byte) slot.Source {
		return slot.Source{Name: n, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d)), nil }}
	}
	m := slot.Manifest{Arch: layout.ARM64, Loader: layout.LoaderUEFI, Tries: 3, Version: "1.4.0", Created: time.Unix(0, 0)}
	if err := slot.WriteBundle(&b, m, []slot.Source{src(slot.RootName, bytes.Repeat([]byte("r"), 5000)), src(layout.KernelFile, []byte("k")), src(layout.InitrdFile, []byte("i"))}, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile("update.bundle", b.Bytes(), 0o644)

	out, errOut, err := ovroot("push", "update.bundle", reg+"/acme/firmware:1.4.0", "--plain-http")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, errOut)
	}
	digest := strings.TrimSpace(out)
	if !strings.HasPrefix(digest, "sha256:") || !strings.Contains(errOut, "version 1.4.0, arm64") {
		t.Errorf("push printed %q, logged %q", out, errOut)
	}
	for _, ref := range []string{reg + "/acme/firmware:1.4.0", reg + "/acme/firmware@" + digest} {
		os.Remove("back.bundle")
		out, errOut, err = ovroot("pull", ref, "-o", "back.bundle", "--plain-http")
		if err != nil {
			t.Fatalf("pull %s: %v\n%s", ref, err, errOut)
		}
		if got, _ := os.ReadFile("back.bundle"); !bytes.Equal(got, b.Bytes()) {
			t.Errorf("pull %s wrote other bytes", ref)
		}
		if !strings.Contains(out, "version 1.4.0") || !strings.Contains(out, digest) {
			t.Errorf("pull printed %q", out)
		}
	}
	if _, _, err := ovroot("pull", reg+"/acme/firmware:9", "-o", "x.bundle", "--plain-http"); err == nil || !strings.Contains(err.Error(), reg+"/acme/firmware:9") {
		t.Errorf("pull of a missing tag = %v, want an error naming it", err)
	}
	for _, args := range [][]string{{"push", "update.bundle"}, {"pull", reg + "/acme/firmware:1.4.0"}} {
		if _, _, err := ovroot(args...); !errors.Is(err, ErrUsage) {
			t.Errorf("ovroot %q = %v, want a usage error", args, err)
		}
	}
}
