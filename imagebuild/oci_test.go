package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ovlayout "github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// ociLayer is a go-containerregistry layer (gzip-compressed, as docker
// and buildx write them) of a tar made of entries.
func ociLayer(t testing.TB, entries []tarEntry) v1.Layer {
	t.Helper()
	b := tarBytes(entries)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ociImage is an image for platform p (os/arch[/variant]) of the layers.
func ociImage(t testing.TB, p string, layers ...[]tarEntry) v1.Image {
	t.Helper()
	pl, err := v1.ParsePlatform(p)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := empty.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = pl.OS, pl.Architecture, pl.Variant
	img, err := mutate.ConfigFile(empty.Image, cf)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if img, err = mutate.AppendLayers(img, ociLayer(t, l)); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// writeLayout writes an OCI image layout whose index.json lists imgs,
// each with its platform in the index when withPlatform.
func writeLayout(t testing.TB, dir string, withPlatform bool, imgs ...v1.Image) layout.Path {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	for _, img := range imgs {
		add := mutate.IndexAddendum{Add: img}
		if withPlatform {
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			add.Descriptor.Platform = cf.Platform()
		}
		idx = mutate.AppendManifests(idx, add)
	}
	p, err := layout.Write(dir, idx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tarDir writes the tree at dir as a tarball (gzip-compressed if gz), the
// way an OCI archive is a tar of a layout.
func tarDir(t testing.TB, dir, out string, gz bool) {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	if zw != nil {
		zw.Close()
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unpackImage opens rootfs for arch and unpacks its layers.
func unpackImage(t *testing.T, rootfs string, arch ovlayout.Arch) (*containerImage, []string, int, string, error) {
	t.Helper()
	img, err := openImage(context.Background(), rootfs, arch)
	if err != nil {
		return nil, nil, 0, "", err
	}
	if img == nil {
		t.Fatalf("openImage(%s) = nil, want an image", rootfs)
	}
	t.Cleanup(img.close)
	dir := filepath.Join(t.TempDir(), "root")
	pseudo, n, err := unpackLayers(context.Background(), img.layers, dir)
	return img, pseudo, n, dir, err
}

// An image's layers applied in order give exactly what the flattened tree
// as one plain tarball gives: the same pseudo definitions (owners, modes,
// devices), the same entry count, the same tree on disk (content, hard
// links, times, xattrs).
func TestOCILayersFlatten(t *testing.T) {
	xattr := func(e tarEntry, k, v string) tarEntry {
		e.hdr.PAXRecords = map[string]string{"SCHILY.xattr." + k: v}
		return e
	}
	setuid := reg("bin/su", "su", 0o4755)
	setuid.hdr.Uid, setuid.hdr.Gid = 0, 0
	owned := reg("home/u/f", "mine", 0o600)
	owned.hdr.Uid, owned.hdr.Gid = 1000, 1000
	null := tarEntry{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}}
	for _, tc := range []struct {
		name   string
		layers [][]tarEntry
		flat   []tarEntry
	}{
		{"override order across 3 layers",
			[][]tarEntry{
				{dir("etc/"), reg("etc/a", "1", 0o644), reg("etc/b", "1", 0o644)},
				{reg("etc/a", "2", 0o600)},
				{reg("etc/a", "3", 0o640), reg("etc/c", "3", 0o644)}},
			[]tarEntry{dir("etc/"), reg("etc/a", "3", 0o640), reg("etc/b", "1", 0o644), reg("etc/c", "3", 0o644)}},
		{"whiteout",
			[][]tarEntry{
				{dir("a/"), reg("a/x", "x", 0o644), reg("a/y", "y", 0o644), dir("d/"), reg("d/z", "z", 0o644)},
				{wh("a/.wh.x"), wh(".wh.d")}},
			[]tarEntry{dir("a/"), reg("a/y", "y", 0o644)}},
		{"whiteout then the same name again in a later layer",
			[][]tarEntry{{reg("f", "old", 0o644)}, {wh(".wh.f")}, {reg("f", "new", 0o600)}},
			[]tarEntry{reg("f", "new", 0o600)}},
		{"whiteout hides only lower layers",
			[][]tarEntry{{reg("f", "old", 0o644)}, {reg("g", "same layer", 0o644), wh(".wh.g")}},
			[]tarEntry{reg("f", "old", 0o644), reg("g", "same layer", 0o644)}},
		{"opaque directory",
			[][]tarEntry{
				{dir("a/"), reg("a/x", "x", 0o644), dir("a/sub/"), reg("a/sub/y", "y", 0o644), reg("b", "b", 0o644)},
				{dir("a/"), reg("a/z", "z", 0o644), wh("a/.wh..wh..opq")}},
			[]tarEntry{dir("a/"), reg("a/z", "z", 0o644), reg("b", "b", 0o644)}},
		{"a file replaces a directory of a lower layer",
			[][]tarEntry{{dir("a/"), reg("a/x", "x", 0o644)}, {reg("a", "file", 0o644)}},
			[]tarEntry{reg("a", "file", 0o644)}},
		{"hard link in the same layer",
			[][]tarEntry{{dir("bin/"), reg("bin/busybox", "bb", 0o755), hardlink("bin/sh", "bin/busybox")}, {reg("etc", "x", 0o644)}},
			[]tarEntry{dir("bin/"), reg("bin/busybox", "bb", 0o755), hardlink("bin/sh", "bin/busybox"), reg("etc", "x", 0o644)}},
		{"hard link to a lower layer's file",
			[][]tarEntry{{reg("f", "f", 0o755)}, {hardlink("l", "f")}},
			[]tarEntry{reg("f", "f", 0o755), hardlink("l", "f")}},
		{"hard link outlives its whited-out target",
			[][]tarEntry{{reg("f", "f", 0o755), hardlink("l", "f"), hardlink("m", "f")}, {wh(".wh.f")}},
			[]tarEntry{reg("l", "f", 0o755), hardlink("m", "l")}},
		{"setuid file and owners",
			[][]tarEntry{{dir("bin/"), setuid}, {dir("home/"), dir("home/u/"), owned}},
			[]tarEntry{dir("bin/"), setuid, dir("home/"), dir("home/u/"), owned}},
		{"device node",
			[][]tarEntry{{dir("dev/"), null}, {reg("dev/x", "x", 0o644)}},
			[]tarEntry{dir("dev/"), null, reg("dev/x", "x", 0o644)}},
		{"device node whited out",
			[][]tarEntry{{dir("dev/"), null}, {wh("dev/.wh.null")}},
			[]tarEntry{dir("dev/")}},
		{"user xattr",
			[][]tarEntry{{xattr(reg("f", "f", 0o644), "user.test", "one")}, {xattr(dir("d/"), "user.d", "two")}},
			[]tarEntry{xattr(reg("f", "f", 0o644), "user.test", "one"), xattr(dir("d/"), "user.d", "two")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp := filepath.Join(t.TempDir(), "oci")
			writeLayout(t, lp, true, ociImage(t, "linux/arm64", tc.layers...))
			img, pseudo, n, got, err := unpackImage(t, lp, ovlayout.ARM64)
			if err != nil {
				t.Fatalf("unpack of the image: %v", err)
			}
			if len(img.layers) != len(tc.layers) {
				t.Errorf("%d layers, want %d", len(img.layers), len(tc.layers))
			}
			wantPseudo, wantN, want := flat(t, tc.flat)
			sort.Strings(pseudo)
			sort.Strings(wantPseudo)
			if strings.Join(pseudo, "\n") != strings.Join(wantPseudo, "\n") {
				t.Errorf("pseudo definitions:\n%s\nwant (the flattened tarball's):\n%s", strings.Join(pseudo, "\n"), strings.Join(wantPseudo, "\n"))
			}
			if n != wantN {
				t.Errorf("%d entries, the flattened tarball has %d", n, wantN)
			}
			if d := diffTrees(treeOf(t, want), treeOf(t, got)); d != "" {
				t.Errorf("tree differs from the flattened tarball's (-flat +image):\n%s", d)
			}
		})
	}
}

// The image for the target arch is taken from a multi-arch index; arm
// prefers v7 over v6.
func TestOCIPickArch(t *testing.T) {
	lp := filepath.Join(t.TempDir(), "oci")
	var imgs []v1.Image
	for _, p := range []string{"linux/amd64", "linux/arm/v6", "linux/arm64", "linux/arm/v7"} {
		imgs = append(imgs, ociImage(t, p, []tarEntry{reg("platform", p, 0o644)}))
	}
	writeLayout(t, lp, true, imgs...)
	for _, tc := range []struct {
		arch ovlayout.Arch
		want string
	}{{ovlayout.X86_64, "linux/amd64"}, {ovlayout.ARM64, "linux/arm64"}, {ovlayout.ARM, "linux/arm/v7"}} {
		t.Run(string(tc.arch), func(t *testing.T) {
			img, _, _, dir, err := unpackImage(t, lp, tc.arch)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(filepath.Join(dir, "platform"))
			if string(b) != tc.want || img.platform.String() != tc.want {
				t.Errorf("picked %s (content %q), want %s", img.platform.String(), b, tc.want)
			}
			if s := img.String(); !strings.HasPrefix(s, KindOCILayout+" "+lp+", "+tc.want+", 1 layers, sha256:") {
				t.Errorf("description %q", s)
			}
		})
	}
}

// An image for another arch, or for another OS, is refused naming both
// sides (and the config blob for the OS).
func TestOCIWrongPlatform(t *testing.T) {
	files := []tarEntry{reg("f", "f", 0o644)}
	t.Run("index without the arch", func(t *testing.T) {
		lp := filepath.Join(t.TempDir(), "oci")
		writeLayout(t, lp, true, ociImage(t, "linux/amd64", files), ociImage(t, "linux/arm64", files))
		_, err := openImage(context.Background(), lp, ovlayout.ARM)
		want := "index.json has linux/amd64, linux/arm64; the image is for arm (linux/arm/v7)"
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), lp) {
			t.Errorf("openImage = %v, want an error naming %s and saying %q", err, lp, want)
		}
	})
	t.Run("single image, platform only in its config", func(t *testing.T) {
		lp := filepath.Join(t.TempDir(), "oci")
		writeLayout(t, lp, false, ociImage(t, "linux/amd64", files))
		_, err := openImage(context.Background(), lp, ovlayout.ARM64)
		want := "index.json has linux/amd64; the image is for arm64 (linux/arm64)"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("openImage = %v, want %q", err, want)
		}
	})
	t.Run("config for another OS", func(t *testing.T) {
		lp := filepath.Join(t.TempDir(), "oci")
		img := ociImage(t, "windows/amd64", files)
		idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
		if _, err := layout.Write(lp, idx); err != nil {
			t.Fatal(err)
		}
		cfg, _ := img.ConfigName()
		_, err := openImage(context.Background(), lp, ovlayout.X86_64)
		if err == nil || !strings.Contains(err.Error(), "config blob "+cfg.String()) || !strings.Contains(err.Error(), `OS "windows"`) {
			t.Errorf("openImage = %v, want an error naming config blob %s and OS windows", err, cfg)
		}
	})
	t.Run("no arch given", func(t *testing.T) {
		lp := filepath.Join(t.TempDir(), "oci")
		writeLayout(t, lp, true, ociImage(t, "linux/amd64", files))
		_, err := MakeSquashfs(context.Background(), lp, filepath.Join(t.TempDir(), "x.sqfs"), "gzip")
		if err == nil || !strings.Contains(err.Error(), "the target arch picks its image") {
			t.Errorf("MakeSquashfs = %v", err)
		}
	})
}

// A blob changed by one byte, or missing, is refused naming it; nothing of
// a layer that does not match its digest is unpacked.
func TestOCIBadBlobs(t *testing.T) {
	img := ociImage(t, "linux/arm64", []tarEntry{reg("a", "a", 0o644)}, []tarEntry{reg("b", strings.Repeat("b", 5000), 0o644)})
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	mdig, _ := img.Digest()
	layer := m.Layers[1].Digest
	flip := func(p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 1
		os.WriteFile(p, b, 0o644)
	}
	blob := func(lp string, h v1.Hash) string { return filepath.Join(lp, "blobs", h.Algorithm, h.Hex) }
	for _, tc := range []struct {
		name   string
		break_ func(lp string)
		want   []string
	}{
		{"flipped byte in a layer", func(lp string) { flip(blob(lp, layer)) }, []string{"layer 2/2 blob " + layer.String(), "does not match its digest"}},
		{"missing layer", func(lp string) { os.Remove(blob(lp, layer)) }, []string{"layer 2/2 blob " + layer.String(), "no such file"}},
		{"flipped byte in the config", func(lp string) { flip(blob(lp, m.Config.Digest)) }, []string{"config blob " + m.Config.Digest.String(), "does not match its digest"}},
		{"missing config", func(lp string) { os.Remove(blob(lp, m.Config.Digest)) }, []string{m.Config.Digest.Hex}},
		{"flipped byte in the manifest", func(lp string) { flip(blob(lp, mdig)) }, []string{mdig.String()}},
		{"missing manifest", func(lp string) { os.Remove(blob(lp, mdig)) }, []string{mdig.Hex}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp := filepath.Join(t.TempDir(), "oci")
			writeLayout(t, lp, true, img)
			tc.break_(lp)
			var err error
			var dir string
			if _, err = openImage(context.Background(), lp, ovlayout.ARM64); err == nil {
				_, _, _, dir, err = unpackImage(t, lp, ovlayout.ARM64)
			}
			if err == nil {
				t.Fatal("a broken image was accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if dir != "" {
				if _, serr := os.Lstat(filepath.Join(dir, "b")); serr == nil {
					t.Errorf("the unmatched layer's file was unpacked")
				}
			}
		})
	}
}

// A docker save tarball (go-containerregistry's tarball.Write, the format
// of docker save: manifest.json, config, layer files) gives the same tree
// as its layers flattened; one of several images is picked by its arch.
func TestDockerSave(t *testing.T) {
	layers := [][]tarEntry{{dir("etc/"), reg("etc/a", "1", 0o644), reg("etc/b", "1", 0o644)}, {wh("etc/.wh.b"), reg("etc/a", "2", 0o600)}}
	want := []tarEntry{dir("etc/"), reg("etc/a", "2", 0o600)}
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "save.tar")
			tag, _ := name.NewTag("example.com/app:1")
			if err := tarball.WriteToFile(p, tag, ociImage(t, "linux/arm64", layers...)); err != nil {
				t.Fatal(err)
			}
			if gz {
				p = compressFile(t, p, "gzip")
			}
			img, pseudo, n, got, err := unpackImage(t, p, ovlayout.ARM64)
			if err != nil {
				t.Fatal(err)
			}
			if img.kind != KindDockerSave || !strings.HasPrefix(img.String(), KindDockerSave+" "+p+", linux/arm64, 2 layers, config sha256:") {
				t.Errorf("image %s", img)
			}
			wantPseudo, wantN, wantDir := flat(t, want)
			if fmt.Sprint(pseudo) != fmt.Sprint(wantPseudo) || n != wantN {
				t.Errorf("pseudo %q, %d entries; want %q, %d", pseudo, n, wantPseudo, wantN)
			}
			if d := diffTrees(treeOf(t, wantDir), treeOf(t, got)); d != "" {
				t.Errorf("tree (-flat +docker save):\n%s", d)
			}
		})
	}
	t.Run("two images, by arch", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "save.tar")
		a, _ := name.NewTag("example.com/app:amd64")
		b, _ := name.NewTag("example.com/app:arm64")
		refs := map[name.Reference]v1.Image{
			a: ociImage(t, "linux/amd64", []tarEntry{reg("arch", "amd64", 0o644)}),
			b: ociImage(t, "linux/arm64", []tarEntry{reg("arch", "arm64", 0o644)}),
		}
		if err := tarball.MultiRefWriteToFile(p, refs); err != nil {
			t.Fatal(err)
		}
		for _, arch := range []ovlayout.Arch{ovlayout.X86_64, ovlayout.ARM64} {
			_, _, _, got, err := unpackImage(t, p, arch)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(got, "arch")); string(b) != arch.GOARCH() {
				t.Errorf("%s: took the %s image", arch, b)
			}
		}
		_, err := openImage(context.Background(), p, ovlayout.ARM)
		if err == nil || !strings.Contains(err.Error(), "manifest.json has linux/") || !strings.Contains(err.Error(), "the image is for arm (linux/arm/v7)") {
			t.Errorf("openImage for arm = %v", err)
		}
	})
	t.Run("layer changed", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "save.tar")
		tag, _ := name.NewTag("example.com/app:1")
		// Uncompressed layers, so a flipped byte is a tar that reads
		// well with other bytes: only the diff_id says it changed.
		img := ociImage(t, "linux/arm64", []tarEntry{reg("f", strings.Repeat("x", 3000), 0o644)})
		if err := tarball.WriteToFile(p, tag, img); err != nil {
			t.Fatal(err)
		}
		// Replace the layer file by the uncompressed tar with one byte
		// flipped in its content, keeping manifest.json's name for it.
		rewriteTarMember(t, p, func(name string, b []byte) []byte {
			if !strings.HasSuffix(name, ".tar.gz") {
				return b
			}
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(zr)
			i := bytes.Index(raw, []byte("xxxx"))
			raw[i] = 'y'
			return raw
		})
		cf, _ := img.ConfigFile()
		_, _, _, _, err := unpackImage(t, p, ovlayout.ARM64)
		if err == nil || !strings.Contains(err.Error(), "diff_id "+cf.RootFS.DiffIDs[0].String()) || !strings.Contains(err.Error(), "does not match") {
			t.Errorf("unpack = %v, want a mismatch naming diff_id %s", err, cf.RootFS.DiffIDs[0])
		}
	})
}

// rewriteTarMember rewrites a tar file, passing each regular member's
// bytes through fn.
func rewriteTarMember(t *testing.T, p string, fn func(name string, b []byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		b = fn(h.Name, b)
		h.Size = int64(len(b))
		tw.WriteHeader(h)
		tw.Write(b)
	}
	tw.Close()
	os.WriteFile(p, out.Bytes(), 0o644)
}

// An OCI archive (a tar of a layout, plain or gzip-compressed) is the
// layout it holds.
func TestOCIArchive(t *testing.T) {
	layers := [][]tarEntry{{dir("a/"), reg("a/x", "x", 0o644)}, {wh("a/.wh..wh..opq"), reg("a/y", "y", 0o644)}}
	lp := filepath.Join(t.TempDir(), "oci")
	writeLayout(t, lp, true, ociImage(t, "linux/amd64", layers...))
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			p := filepath.Join(t.TempDir(), "image.tar")
			tarDir(t, lp, p, gz)
			img, pseudo, n, got, err := unpackImage(t, p, ovlayout.X86_64)
			if err != nil {
				t.Fatal(err)
			}
			if img.kind != KindOCIArchive {
				t.Errorf("kind %q", img.kind)
			}
			wantPseudo, wantN, wantDir := flat(t, []tarEntry{dir("a/"), reg("a/y", "y", 0o644)})
			if fmt.Sprint(pseudo) != fmt.Sprint(wantPseudo) || n != wantN {
				t.Errorf("pseudo %q, %d entries; want %q, %d", pseudo, n, wantPseudo, wantN)
			}
			if d := diffTrees(treeOf(t, wantDir), treeOf(t, got)); d != "" {
				t.Errorf("tree (-flat +archive):\n%s", d)
			}
			img.close()
			if left, _ := filepath.Glob(filepath.Join(tmp, "ovroot-*")); len(left) > 0 {
				t.Errorf("the extracted layout was left: %v", left)
			}
		})
	}
	t.Run("docker save of Docker 25 (a layout and a manifest.json)", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "save.tar")
		os.WriteFile(filepath.Join(lp, "manifest.json"), []byte(`[{"Config":"blobs/sha256/00","RepoTags":["app:1"],"Layers":["blobs/sha256/11"]}]`), 0o644)
		defer os.Remove(filepath.Join(lp, "manifest.json"))
		tarDir(t, lp, p, false)
		img, err := openImage(context.Background(), p, ovlayout.X86_64)
		if err != nil || img == nil || img.kind != KindOCIArchive {
			t.Fatalf("openImage = %v, %v; want an OCI archive (its layout is what it says, with digests)", img, err)
		}
		img.close()
	})
	t.Run("symlink in the layout refused", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "evil.tar")
		os.WriteFile(p, tarBytes([]tarEntry{reg("oci-layout", `{"imageLayoutVersion":"1.0.0"}`, 0o644), reg("index.json", "{}", 0o644),
			{hdr: tar.Header{Name: "blobs", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}}), 0o644)
		_, err := openImage(context.Background(), p, ovlayout.X86_64)
		if err == nil || !strings.Contains(err.Error(), `tar entry "blobs"`) {
			t.Errorf("openImage = %v, want the symlink entry refused", err)
		}
	})
}

// A rootfs tarball stays a rootfs tarball, whatever it holds at its top
// (a manifest.json of its own, an index.json), and a directory without
// oci-layout is a directory.
func TestPlainTarballStaysPlain(t *testing.T) {
	dockerish := `[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}]`
	for _, tc := range []struct {
		name    string
		entries []tarEntry
	}{
		{"rootfs with a docker-like manifest.json", []tarEntry{reg("manifest.json", dockerish, 0o644), dir("etc/"), reg("sbin/init", "x", 0o755)}},
		{"manifest.json that is not docker save's", []tarEntry{reg("manifest.json", `{"name":"app"}`, 0o644)}},
		{"index.json without oci-layout", []tarEntry{reg("index.json", `{}`, 0o644), dir("blobs/")}},
		{"ordinary rootfs", []tarEntry{dir("./"), dir("etc/"), reg("etc/hostname", "h", 0o644)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "rootfs.tar")
			os.WriteFile(p, tarBytes(tc.entries), 0o644)
			img, err := openImage(context.Background(), p, ovlayout.X86_64)
			if err != nil || img != nil {
				t.Errorf("openImage = %v, %v; want a plain tarball (nil, nil)", img, err)
			}
		})
	}
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "index.json"), []byte("{}"), 0o644)
	if img, err := openImage(context.Background(), d, ovlayout.X86_64); err != nil || img != nil {
		t.Errorf("openImage(dir with index.json only) = %v, %v", img, err)
	}
}

// The init check sees an image with its layers applied: the build runs
// it on the tree it unpacked (makeSquashfs's check).
func TestOCIRootfsHas(t *testing.T) {
	lp := filepath.Join(t.TempDir(), "oci")
	writeLayout(t, lp, true, ociImage(t, "linux/arm64",
		[]tarEntry{dir("sbin/"), reg("sbin/init", "#!/bin/sh\n", 0o755), reg("bin/sh", "ELF?", 0o755), reg("gone", "x", 0o644)},
		[]tarEntry{wh(".wh.gone"), hardlink("bin/ash", "bin/sh")}))
	img, err := openImage(context.Background(), lp, ovlayout.ARM64)
	if err != nil {
		t.Fatal(err)
	}
	defer img.close()
	tree := filepath.Join(t.TempDir(), "root")
	if _, _, err := unpackLayers(context.Background(), img.layers, tree); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"/sbin/init": true, "/gone": false, "/bin/ash": true, "/nothing": false} {
		if _, got := resolveIn(dirTree(tree).lookup, p); got != want {
			t.Errorf("%s in the unpacked image: %v, want %v", p, got, want)
		}
	}
	w, err := initWarningsIn(lp, "/sbin/init", ovlayout.ARM64, tree)
	if err != nil || len(w) != 0 {
		t.Errorf("initWarnings = %q, %v; want none (init is a script whose /bin/sh exists)", w, err)
	}
	if _, err := RootfsHas(context.Background(), lp, "/sbin/init"); err == nil || !strings.Contains(err.Error(), "container image") {
		t.Errorf("RootfsHas of an image: %v, want it refused", err)
	}
}

// End to end through mksquashfs: an OCI layout with a setuid file, a
// device node, a hard link and a user xattr makes an image that holds them.
func TestMakeSquashfsOCI(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	su := reg("bin/su", "su", 0o4755)
	su.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "kept"}
	lp := filepath.Join(t.TempDir(), "oci")
	writeLayout(t, lp, true, ociImage(t, "linux/arm64",
		[]tarEntry{dir("bin/"), su, hardlink("bin/su2", "bin/su"), reg("bin/old", "x", 0o755)},
		[]tarEntry{dir("dev/"), {hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}}, wh("bin/.wh.old")}))
	img := filepath.Join(t.TempDir(), "root.sqfs")
	n, desc, err := MakeSquashfsFor(context.Background(), lp, ovlayout.ARM64, img, "gzip")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(desc, KindOCILayout+" "+lp+", linux/arm64, 2 layers, sha256:") {
		t.Errorf("description %q", desc)
	}
	got := listing(t, img)
	for _, w := range []string{"/bin/su", "/bin/su2", "/dev/null"} {
		if _, ok := got[w]; !ok {
			t.Errorf("%s missing from the image: %v", w, got)
		}
	}
	if _, ok := got["/bin/old"]; ok {
		t.Errorf("/bin/old was whited out but is in the image")
	}
	if !strings.HasPrefix(got["/bin/su"], "-rwsr-xr-x") {
		t.Errorf("/bin/su is %q, want setuid", got["/bin/su"])
	}
	if !strings.HasPrefix(got["/dev/null"], "crw-rw-rw-") {
		t.Errorf("/dev/null is %q", got["/dev/null"])
	}
	if n != len(got) {
		t.Errorf("MakeSquashfsFor counted %d entries, the image has %d", n, len(got))
	}
	out := filepath.Join(t.TempDir(), "x")
	if b, err := exec.Command("unsquashfs", "-no-progress", "-d", out, img, "/bin/su").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, b)
	}
	buf := make([]byte, 64)
	k, err := unix.Lgetxattr(filepath.Join(out, "bin/su"), "user.note", buf)
	if err != nil || string(buf[:k]) != "kept" {
		t.Errorf("user.note of /bin/su in the image: %q, %v; want \"kept\"", buf[:max(k, 0)], err)
	}
}

// FuzzImageArchive reads arbitrary bytes as a rootfs file: the detection
// of OCI archives and docker save tarballs, go-containerregistry's reading
// of them and the unpack of what they hold never panic nor write outside
// the build's directories.
func FuzzImageArchive(f *testing.F) {
	seedDir := f.TempDir()
	img := ociImage(f, "linux/amd64", []tarEntry{dir("a/"), reg("a/x", "x", 0o644)}, []tarEntry{wh("a/.wh.x"), reg("b", "b", 0o644)})
	tag, _ := name.NewTag("example.com/app:1")
	if err := tarball.WriteToFile(filepath.Join(seedDir, "save.tar"), tag, img); err != nil {
		f.Fatal(err)
	}
	lp := filepath.Join(seedDir, "oci")
	writeLayout(f, lp, true, img)
	tarDir(f, lp, filepath.Join(seedDir, "oci.tar"), false)
	for _, p := range []string{"save.tar", "oci.tar"} {
		b, err := os.ReadFile(filepath.Join(seedDir, p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	defer func(old int64) { maxEntrySize = old }(maxEntrySize)
	maxEntrySize = 64 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		makeOutside(t, outside)
		tmp := filepath.Join(base, "tmp")
		os.Mkdir(tmp, 0o755)
		t.Setenv("TMPDIR", tmp)
		p := filepath.Join(base, "rootfs.tar")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, outside, "")
		img, err := openImage(context.Background(), p, ovlayout.X86_64)
		if err != nil || img == nil {
			return
		}
		defer img.close()
		_, _, err = unpackLayers(context.Background(), img.layers, filepath.Join(tmp, "root"))
		if d := diffSnapshots(before, snapshot(t, outside, "")); d != "" {
			t.Fatalf("unpack (err %v) changed the host outside its root:\n%s", err, d)
		}
	})
}

// Build takes an OCI image as its rootfs and says which one it took.
func TestBuildFromOCI(t *testing.T) {
	needTools(t, "mksquashfs")
	kernel, initrd := fakeBootFiles(t)
	lp := filepath.Join(t.TempDir(), "oci")
	writeLayout(t, lp, true, ociImage(t, "linux/amd64", []tarEntry{reg("sbin/init", "amd64", 0o755)}),
		ociImage(t, "linux/arm64", []tarEntry{dir("sbin/"), reg("sbin/init", "arm64", 0o755)}, []tarEntry{reg("etc/x", "x", 0o644)}))
	spec := Spec{Arch: ovlayout.ARM64, Kernel: kernel, Initramfs: initrd, Cmdline: "console=ttyAMA0",
		Rootfs: lp, Compression: "gzip", BootSize: 40 << 20, DataSize: 20 << 20, KernelRelease: "6.1.0-test"}
	res, err := Build(context.Background(), spec, filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Rootfs, KindOCILayout+" "+lp+", linux/arm64, 2 layers, sha256:") {
		t.Errorf("Result.Rootfs = %q", res.Rootfs)
	}
	// /, /sbin, /sbin/init, /etc, /etc/x and the six mount points
	if res.Entries != 11 {
		t.Errorf("entries = %d, want 11", res.Entries)
	}
}

// An index.json that names an index (as buildx writes a multi-arch image
// into a layout), and attestation manifests (platform unknown/unknown),
// still gives the image for the arch.
func TestOCINestedIndex(t *testing.T) {
	var inner v1.ImageIndex = empty.Index
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		img := ociImage(t, p, []tarEntry{reg("platform", p, 0o644)})
		cf, _ := img.ConfigFile()
		inner = mutate.AppendManifests(inner, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	att := ociImage(t, "unknown/unknown", []tarEntry{reg("attestation", "{}", 0o644)})
	inner = mutate.AppendManifests(inner, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}})
	lp := filepath.Join(t.TempDir(), "oci")
	if _, err := layout.Write(lp, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: inner})); err != nil {
		t.Fatal(err)
	}
	img, _, _, dir, err := unpackImage(t, lp, ovlayout.ARM64)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "platform")); string(b) != "linux/arm64" || img.platform.String() != "linux/arm64" {
		t.Errorf("took %s (%q), want linux/arm64", img.platform.String(), b)
	}
	_, err = openImage(context.Background(), lp, ovlayout.ARM)
	if want := "index.json has linux/amd64, linux/arm64; the image is for arm"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("openImage for arm = %v, want %q (attestations not listed)", err, want)
	}
}
