package bench

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ociBench writes a three-layer OCI image layout of about 50,000 files
// (30,000 in the base, 15,000 more in the second layer with 1,000
// whiteouts of base files and an opaque directory, 5,000 more in the
// third, 2,000 of them overriding lower files), gzip layers as registries
// hold them, and the flattened tree (go-containerregistry's own
// mutate.Extract, unpacked with tar) that plain mksquashfs gets.
func ociBench(t *testing.T, work string) (layoutDir, flat string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(19, 50000))
	body := func() []byte {
		b := make([]byte, 200+rng.IntN(3000))
		for i := range b {
			b[i] = "abcdefghij klmnop\n"[rng.IntN(18)]
		}
		return b
	}
	mtime := time.Unix(1700000000, 0)
	layer := func(write func(add func(h *tar.Header, b []byte))) v1.Layer {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		dirs := map[string]bool{}
		add := func(h *tar.Header, b []byte) {
			// Parent directories first, as image builders write them.
			for d := filepath.Dir(h.Name); d != "." && !dirs[d]; d = filepath.Dir(d) {
				dirs[d] = true
				defer tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime})
			}
			h.ModTime, h.Size = mtime, int64(len(b))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
			tw.WriteHeader(h)
			tw.Write(b)
		}
		write(add)
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		data := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	file := func(i int) string { return fmt.Sprintf("usr/share/d%03d/f%05d", i/100, i) }
	base := layer(func(add func(*tar.Header, []byte)) {
		for i := 0; i < 30000; i++ {
			add(&tar.Header{Name: file(i), Typeflag: tar.TypeReg}, body())
		}
	})
	second := layer(func(add func(*tar.Header, []byte)) {
		for i := 0; i < 1000; i++ {
			add(&tar.Header{Name: filepath.Join(filepath.Dir(file(i*7)), ".wh."+filepath.Base(file(i*7))), Typeflag: tar.TypeReg}, nil)
		}
		add(&tar.Header{Name: "usr/share/d299/.wh..wh..opq", Typeflag: tar.TypeReg}, nil)
		for i := 30000; i < 45000; i++ {
			add(&tar.Header{Name: file(i), Typeflag: tar.TypeReg}, body())
		}
	})
	third := layer(func(add func(*tar.Header, []byte)) {
		for i := 0; i < 2000; i++ {
			add(&tar.Header{Name: file(1 + i*13), Typeflag: tar.TypeReg, Mode: 0o600}, body())
		}
		for i := 45000; i < 48000; i++ {
			add(&tar.Header{Name: file(i), Typeflag: tar.TypeReg}, body())
		}
	})
	img, err := mutate.AppendLayers(empty.Image, base, second, third)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	layoutDir = filepath.Join(work, "oci")
	p, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	flat = filepath.Join(work, "oci-flat")
	os.MkdirAll(flat, 0o755)
	rc := mutate.Extract(img)
	defer rc.Close()
	cmd := exec.Command("tar", "-xf", "-", "-C", flat)
	cmd.Stdin = rc
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -x of the flattened image: %v\n%s", err, out)
	}
	return layoutDir, flat
}
