package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
)

// writeLayerTar writes tar entries (a body per regular file) to a file.
func writeLayerTar(t *testing.T, p string, hs []tar.Header, bodies map[string]string) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hs {
		h.Size = int64(len(bodies[h.Name]))
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(bodies[h.Name]))
	}
	tw.Close()
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A stacked root is the bottom squashfs with the layer table, then each
// layer's squashfs at its table offset from the 4 KiB boundary after it;
// whiteouts and opaque directories of the upper layers are kept for the
// device's overlay (a tarball's .wh. entries, a directory's 0/0 device).
func TestMakeStack(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	testenv.RequireRoot(t, "an opaque directory is a trusted.* xattr; a directory layer's whiteout a 0/0 device")
	dir := t.TempDir()
	base, cfg := filepath.Join(dir, "base"), filepath.Join(dir, "config")
	writeTree(t, base, map[string]string{"etc/hostname": "factory\n", "etc/gone": "x", "home/alice/fresh": "base\n", "sbin/init": "#!/bin/sh\n"})
	app := filepath.Join(dir, "app.tar")
	writeLayerTar(t, app, []tar.Header{
		{Name: "etc/.wh.gone", Typeflag: tar.TypeReg},
		{Name: "home/alice/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000},
		{Name: "home/alice/.wh..wh..opq", Typeflag: tar.TypeReg},
		{Name: "home/alice/app", Typeflag: tar.TypeReg, Mode: 0o644},
	}, map[string]string{"home/alice/app": "app\n"})
	writeTree(t, cfg, map[string]string{"etc/hostname": "config\n"})
	if err := unix.Mknod(filepath.Join(cfg, "etc/app-hidden"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "root.squashfs")
	var checked []string
	s := Spec{Arch: layout.X86_64, Compression: "gzip", Stack: []config.Layer{{Name: "base", Rootfs: base}, {Name: "app", Rootfs: app}, {Name: "config", Rootfs: cfg}}}
	n, desc, err := makeStack(context.Background(), s, out, func(dirs ...string) error { checked = dirs; return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries: %s", n, desc)
	if want := regexp.MustCompile(`^3 stacked layers, bottom first: base: directory \S+; app: tarball \S+; config: directory \S+$`); !want.MatchString(desc) {
		t.Errorf("rootfs description %q, want the layers bottom first", desc)
	}
	if len(checked) != 3 || checked[0] != cfg || checked[2] != base {
		t.Errorf("init check got %q, want the three trees top first", checked)
	}
	data, err := exec.Command("unsquashfs", "-cat", out, layout.LayersFile).Output()
	if err != nil {
		t.Fatalf("the bottom layer has no %s: %v", layout.LayersFile, err)
	}
	table, err := layout.ParseLayerTable(data)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := os.ReadFile(out)
	bottom, err := squashfsBytes(sb)
	if err != nil {
		t.Fatal(err)
	}
	start := layout.LayersStart(bottom)
	if got := int64(len(sb)); got != layout.LayersStart(start+table.Layers[2].Offset+table.Layers[2].Size) {
		t.Errorf("root is %d bytes, want it to end at the last layer's 4 KiB boundary", got)
	}
	list := func(off int64) string {
		t.Helper()
		b, err := exec.Command("unsquashfs", "-o", strconv.FormatInt(off, 10), "-lln", out).CombinedOutput()
		if err != nil {
			t.Fatalf("no squashfs at byte %d: %v\n%s", off, err, b)
		}
		return string(b)
	}
	appList, cfgList := list(start+table.Layers[1].Offset), list(start+table.Layers[2].Offset)
	for _, c := range []struct{ list, want string }{
		{appList, "squashfs-root/etc/gone"}, {appList, "squashfs-root/home/alice/app"}, {cfgList, "squashfs-root/etc/app-hidden"},
	} {
		if !strings.Contains(c.list, c.want) {
			t.Errorf("no %s in:\n%s", c.want, c.list)
		}
	}
	for _, l := range strings.Split(appList+cfgList, "\n") {
		if (strings.HasSuffix(l, "/etc/gone") || strings.HasSuffix(l, "/etc/app-hidden")) && (!strings.HasPrefix(l, "c") || !strings.Contains(l, " 0,  0 ")) {
			t.Errorf("whiteout not a 0/0 character device: %s", l)
		}
	}
	if strings.Contains(appList, ".wh.") {
		t.Errorf("a .wh. entry stayed a file:\n%s", appList)
	}
	x := filepath.Join(dir, "x")
	if b, err := exec.Command("unsquashfs", "-o", strconv.FormatInt(start+table.Layers[1].Offset, 10), "-d", x, out).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	v := make([]byte, 8)
	if k, err := unix.Lgetxattr(filepath.Join(x, "home/alice"), overlayOpaque, v); err != nil || string(v[:k]) != "y" {
		t.Errorf("home/alice in the app layer: %s = %q, %v; want y", overlayOpaque, v[:max(k, 0)], err)
	}

	// A layer above the bottom may not bring ovroot's own files.
	evil := filepath.Join(dir, "evil")
	writeTree(t, evil, map[string]string{"etc/ovroot/trusted-keys/vendor.pub": "key"})
	keys := filepath.Join(dir, "keys.pub")
	os.WriteFile(keys, []byte("k"), 0o644)
	s.Stack[2].Rootfs = evil
	s.Add = []Addition{{Path: "/etc/ovroot/trusted-keys/image.pub", Source: keys, Mode: 0o644, Own: true}}
	s.Stack[2].Rootfs = filepath.Join(dir, "evil2")
	writeTree(t, s.Stack[2].Rootfs, map[string]string{"etc/ovroot/trusted-keys/image.pub": "key"})
	if _, _, err := makeStack(context.Background(), s, filepath.Join(dir, "evil.squashfs"), nil); err == nil || !strings.Contains(err.Error(), "layer config: the layer has /etc/ovroot/trusted-keys/image.pub") {
		t.Errorf("a layer with the image's trusted key = %v, want refused naming it", err)
	}
	// Nor a layer table of its own: /rom would show it, not the one the
	// init reads.
	writeTree(t, filepath.Join(dir, "evil3"), map[string]string{layout.LayersFile: "{}"})
	s.Stack[2].Rootfs, s.Add = filepath.Join(dir, "evil3"), nil
	if _, _, err := makeStack(context.Background(), s, filepath.Join(dir, "evil3.squashfs"), nil); err == nil || !strings.Contains(err.Error(), "layer config: the layer has /"+layout.LayersFile) {
		t.Errorf("a layer with a layer table = %v, want refused naming it", err)
	}
}

// squashfsBytes is bytes_used of a squashfs superblock.
func squashfsBytes(b []byte) (int64, error) {
	if len(b) < 48 || string(b[:4]) != "hsqs" {
		return 0, os.ErrInvalid
	}
	var n int64
	for i := 7; i >= 0; i-- {
		n = n<<8 | int64(b[40+i])
	}
	return n, nil
}

// The init check of a stacked root reads the layers top first: the init
// of the bottom layer counts, unless a layer above deletes it.
func TestStackTreeInit(t *testing.T) {
	testenv.RequireRoot(t, "a whiteout is a 0/0 device")
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base"), filepath.Join(dir, "top")
	writeTree(t, base, map[string]string{"sbin/init": "#!/bin/sh\n", "bin/sh": "not an ELF"})
	writeTree(t, top, map[string]string{"etc/x": "x"})
	w, err := initWarningsIn("stack", "/sbin/init", layout.X86_64, top, base)
	if err != nil || len(w) != 0 {
		t.Errorf("init in the bottom layer: %q, %v; want no warning", w, err)
	}
	os.MkdirAll(filepath.Join(top, "sbin"), 0o755)
	if err := unix.Mknod(filepath.Join(top, "sbin/init"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if w, _ := initWarningsIn("stack", "/sbin/init", layout.X86_64, top, base); len(w) != 1 || !strings.Contains(w[0], "has no /sbin/init") {
		t.Errorf("init deleted by a whiteout above: %q, want the no-init warning", w)
	}
}

// A stacked layer given as a directory is read, never written: not even
// a container image's layout, which is a directory too, and the tree its
// layers are unpacked to is the build's own.
func TestMakeStackLeavesInputs(t *testing.T) {
	needTools(t, "mksquashfs")
	dir := t.TempDir()
	base, oci, app := filepath.Join(dir, "base"), filepath.Join(dir, "oci"), filepath.Join(dir, "app.tar")
	writeTree(t, base, map[string]string{"etc/hostname": "factory\n"})
	writeLayout(t, oci, true, ociImage(t, "linux/amd64", []tarEntry{{hdr: tar.Header{Name: "etc/os-release", Typeflag: tar.TypeReg, Mode: 0o644}, body: "oci\n"}}))
	writeLayerTar(t, app, []tar.Header{{Name: "etc/app", Typeflag: tar.TypeReg, Mode: 0o644}}, map[string]string{"etc/app": "x"})
	before := treeListing(t, dir)
	s := Spec{Arch: layout.X86_64, Compression: "gzip", Stack: []config.Layer{{Name: "base", Rootfs: base}, {Name: "image", Rootfs: oci}, {Name: "app", Rootfs: app}}}
	out := filepath.Join(t.TempDir(), "root.squashfs")
	if _, _, err := makeStack(context.Background(), s, out, nil); err != nil {
		t.Fatal(err)
	}
	if after := treeListing(t, dir); after != before {
		t.Errorf("the inputs changed:\nbefore\n%s\nafter\n%s", before, after)
	}
}
