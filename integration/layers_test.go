package integration

import (
	"archive/tar"
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/ovroot/ovroot/internal/manifest"
	ovlayout "github.com/ovroot/ovroot/layout"
)

// TestImageRootfs boots images whose rootfs is a container image the test
// makes itself with go-containerregistry's writers (nothing downloaded):
// on x86_64 an OCI image layout holding a multi-arch index (amd64 and
// arm64), on arm64 a `docker save` tarball. Three layers: the small test
// rootfs (owners, setuid and setgid files, a hard-link pair, a fifo,
// device nodes), then a layer with a whiteout, an opaque directory, an
// xattr, a setuid file and a hard link, then one that overrides a file of
// the first. The guest's merged root, with owners, modes, xattrs and hard
// links, must equal the flatten go-containerregistry's own mutate.Extract
// gives on the host, and the override, the deletion and the opaque
// directory are checked by name too.
func TestImageRootfs(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			testImageRootfs(t, arch)
		})
	}
}

// The layers above the test rootfs.
var (
	layerTwo = []layerEntry{
		{h: tar.Header{Name: "var/log/.wh.app.log", Typeflag: tar.TypeReg}},
		{h: tar.Header{Name: "home/alice/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}},
		{h: tar.Header{Name: "home/alice/.wh..wh..opq", Typeflag: tar.TypeReg}},
		{h: tar.Header{Name: "home/alice/fresh", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1000, Gid: 1000}, body: "only this\n"},
		{h: tar.Header{Name: "etc/labelled", Typeflag: tar.TypeReg, Mode: 0o644,
			PAXRecords: map[string]string{"SCHILY.xattr.user.origin": "layer-two"}}, body: "xattr\n"},
		{h: tar.Header{Name: "usr/bin/su2", Typeflag: tar.TypeReg, Mode: 0o4750, Gid: 27}, body: "setuid two\n"},
		{h: tar.Header{Name: "usr/bin/su2-again", Typeflag: tar.TypeLink, Linkname: "usr/bin/su2"}},
	}
	layerThree = []layerEntry{
		{h: tar.Header{Name: strings.TrimPrefix(factoryConf, "/"), Typeflag: tar.TypeReg, Mode: 0o600, Uid: 0, Gid: 0}, body: "layer-three=1\n"},
	}
)

type layerEntry struct {
	h    tar.Header
	body string
}

func tarLayer(t *testing.T, entries []layerEntry) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.h
		h.Format, h.ModTime, h.Size = tar.FormatPAX, time.Unix(1700000000, 0), int64(len(e.body))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := b.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// containerImage is the three-layer image for arch.
func containerImage(t *testing.T, arch ovlayout.Arch) v1.Image {
	t.Helper()
	base, err := tarball.LayerFromFile(makeSmallRootfsTar(t, arch))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, base, tarLayer(t, layerTwo), tarLayer(t, layerThree))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", map[ovlayout.Arch]string{ovlayout.X86_64: "amd64", ovlayout.ARM64: "arm64"}[arch]
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

func testImageRootfs(t *testing.T, arch ovlayout.Arch) {
	img := containerImage(t, arch)
	var rootfs string
	if arch == ovlayout.X86_64 {
		// An OCI layout with an index of two arches: the build picks its own.
		other := containerImage(t, ovlayout.ARM64)
		dir := filepath.Join(t.TempDir(), "oci")
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			img  v1.Image
			arch string
		}{{other, "arm64"}, {img, "amd64"}} {
			if err := p.AppendImage(c.img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: c.arch})); err != nil {
				t.Fatal(err)
			}
		}
		rootfs = dir
	} else {
		rootfs = filepath.Join(t.TempDir(), "image.tar")
		tag, err := name.NewTag("example.com/router/rootfs:1")
		if err != nil {
			t.Fatal(err)
		}
		if err := tarball.WriteToFile(rootfs, tag, img); err != nil {
			t.Fatal(err)
		}
	}
	// The host's flatten, by go-containerregistry, not by ovroot.
	rc := mutate.Extract(img)
	factory, err := manifest.FromTar(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	im := buildImage(t, arch, rootfs, nil)
	vm := boot(t, im)
	expect(t, vm, "GUEST: ready")
	checkFactoryFull(t, vm, factory)
	for _, c := range []struct{ cmd, want string }{
		{"cat " + factoryConf, "layer-three=1\n"},
		{"exists /var/log/app.log", "/var/log/app.log exists=false\n"},
		{"exists /home/alice/notes", "/home/alice/notes exists=false\n"},
		{"cat /home/alice/fresh", "only this\n"},
		{"getxattr /etc/labelled user.origin", "layer-two\n"},
	} {
		if got := guest(t, vm, c.cmd); got != c.want {
			t.Errorf("%s = %q, want %q", c.cmd, got, c.want)
		}
	}
	powerOff(t, vm)
	t.Run("stacked", func(t *testing.T) { testStackedLayers(t, arch, rootfs) })
}
