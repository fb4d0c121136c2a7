package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/backup"
	"github.com/ovroot/ovroot/internal/manifest"
	"github.com/ovroot/ovroot/internal/testenv"
	"golang.org/x/sys/unix"
)

// writeTree makes files (content by relative path) under dir, 0755 dirs.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A customer's changes, backed up from a device's upper by package backup
// (what ovrootctl backup runs), baked with --layer onto the rootfs (a
// directory, and the same as a tarball) give the tree the device showed:
// the overlay of that upper on that rootfs, compared with owners, modes,
// xattrs and hard links (internal/manifest's WalkFull).
func TestBackupLayerOnRootfs(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs", "tar")
	testenv.RequireRoot(t, "an upper's whiteouts are char devices 0/0, its opaque mark a trusted.* xattr; the expected tree is an overlay mount")
	dir := t.TempDir()
	rootfs, upper := filepath.Join(dir, "rootfs"), filepath.Join(dir, "upper")
	writeTree(t, rootfs, map[string]string{
		"etc/hostname": "factory\n", "etc/motd": "welcome\n", "etc/issue": "Debian\n", "etc/issue.net": "Debian\n",
		"usr/share/doc/factory.txt": "factory doc", "usr/share/doc/sub/more.txt": "more", "usr/bin/keep": "keep",
	})
	for _, m := range mountPoints { // the image has them either way
		os.MkdirAll(filepath.Join(rootfs, m), 0o755)
	}
	writeTree(t, upper, map[string]string{"etc/hostname": "mine\n", "etc/app.conf": "secret\n", "usr/share/doc/mine.txt": "doc", "usr/bin/tool": "#!/bin/sh\n"})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(rootfs, 0o755))
	must(os.Chmod(upper, 0o755))
	must(os.Chown(filepath.Join(upper, "etc/app.conf"), 1000, 1001))
	if err := unix.Lsetxattr(filepath.Join(upper, "etc/app.conf"), "user.comment", []byte("kept"), 0); err != nil {
		testenv.Missing(t, "user.* xattrs in "+dir+": "+err.Error())
	}
	must(unix.Chmod(filepath.Join(upper, "usr/bin/tool"), 0o4755))
	must(os.Link(filepath.Join(upper, "usr/bin/tool"), filepath.Join(upper, "usr/bin/tool2")))
	must(os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(upper, "etc/localtime")))
	must(unix.Mknod(filepath.Join(upper, "etc/motd"), unix.S_IFCHR, 0))
	must(unix.Mknod(filepath.Join(upper, "etc/issue"), unix.S_IFCHR, 0))
	must(os.Link(filepath.Join(upper, "etc/issue"), filepath.Join(upper, "etc/issue.net")))
	must(unix.Lsetxattr(filepath.Join(upper, "usr/share/doc"), "trusted.overlay.opaque", []byte("y"), 0))

	layer := filepath.Join(dir, "backup.tar.gz")
	must(backup.WriteFile(upper, layer, backup.Options{Gzip: true}))

	// What the device showed: the upper over the rootfs, mounted read-only
	// as two lower layers (nothing written to either).
	merged := filepath.Join(dir, "merged")
	must(os.Mkdir(merged, 0o755))
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, fmt.Sprintf("lowerdir=%s:%s", upper, rootfs)); err != nil {
		testenv.Missing(t, "cannot mount an overlay here: "+err.Error())
	}
	want, err := manifest.WalkFull(merged, nil)
	unix.Unmount(merged, 0)
	must(err)

	tarball := filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "--numeric-owner", "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	before, err := manifest.WalkFull(rootfs, nil)
	must(err)
	for _, tc := range []struct{ name, rootfs string }{{"directory", rootfs}, {"tarball", tarball}} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "root.sqfs")
			_, desc, err := MakeSquashfsLayers(context.Background(), tc.rootfs, []string{layer}, "", img, "gzip")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(desc, "+ 1 layers ("+layer+")") {
				t.Errorf("description %q does not name the layer", desc)
			}
			ex := filepath.Join(t.TempDir(), "x")
			if out, err := exec.Command("unsquashfs", "-d", ex, img).CombinedOutput(); err != nil {
				t.Fatalf("unsquashfs: %v\n%s", err, out)
			}
			got, err := manifest.WalkFull(ex, nil)
			must(err)
			if d := manifest.Diff(want, got); len(d) > 0 {
				t.Errorf("image with the backup layer differs from the overlay of the upper on the rootfs:\n%s", strings.Join(d, "\n"))
			}
		})
	}
	after, err := manifest.WalkFull(rootfs, nil)
	must(err)
	if d := manifest.Diff(before, after); len(d) > 0 {
		t.Errorf("the rootfs directory was modified:\n%s", strings.Join(d, "\n"))
	}
}

// Layers apply in order onto a directory rootfs without root: a whiteout
// and an opaque directory of the first layer, a file of the second over
// the first's; the directory itself is left as it was.
func TestLayersOnDirectory(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	writeTree(t, rootfs, map[string]string{"etc/motd": "welcome", "etc/hostname": "factory", "usr/share/doc/a": "a", "usr/share/doc/b/c": "c"})
	os.Chmod(filepath.Join(rootfs, "etc/hostname"), 0o600)
	mkLayer := func(name string, entries ...tar.Header) string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			h.ModTime = time.Unix(1700000000, 0)
			body := ""
			if h.Typeflag == tar.TypeReg {
				body = "from " + name
				if strings.Contains(h.Name, ".wh.") {
					body = ""
				}
				h.Size = int64(len(body))
			}
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(body))
		}
		tw.Close()
		p := filepath.Join(dir, name+".tar")
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	reg := func(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644} }
	l1 := mkLayer("one", reg("etc/.wh.motd"), tar.Header{Name: "usr/share/doc/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("usr/share/doc/.wh..wh..opq"), reg("usr/share/doc/mine"), reg("etc/new"))
	l2 := mkLayer("two", reg("etc/new"), tar.Header{Name: "etc/app", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000})
	before, err := manifest.Walk(rootfs, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "root.sqfs")
	if _, _, err := MakeSquashfsLayers(context.Background(), rootfs, []string{l1, l2}, "", img, "gzip"); err != nil {
		t.Fatal(err)
	}
	got := listing(t, img)
	for p, want := range map[string]string{
		"/etc/hostname":       "-rw------- 0/0 7", // -all-root, the mode on disk
		"/etc/new":            "-rw-r--r-- 0/0 8", // "from two"
		"/etc/app":            "-rw-r----- 1000/1000 8",
		"/usr/share/doc/mine": "-rw-r--r-- 0/0 8",
	} {
		if got[p] != want {
			t.Errorf("%s in the image = %q, want %q", p, got[p], want)
		}
	}
	for _, gone := range []string{"/etc/motd", "/usr/share/doc/a", "/usr/share/doc/b", "/usr/share/doc/b/c", "/etc/.wh.motd", "/usr/share/doc/.wh..wh..opq"} {
		if _, ok := got[gone]; ok {
			t.Errorf("%s is in the image, want it hidden by a whiteout", gone)
		}
	}
	if c := catFile(t, img, "etc/new"); c != "from two" {
		t.Errorf("etc/new = %q, want the top layer's %q", c, "from two")
	}
	after, err := manifest.Walk(rootfs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := manifest.Diff(before, after); len(d) > 0 {
		t.Errorf("the rootfs directory was modified:\n%s", strings.Join(d, "\n"))
	}
	if _, _, err := MakeSquashfsLayers(context.Background(), rootfs, []string{filepath.Join(dir, "missing.tar")}, "", img, "gzip"); err == nil || !strings.Contains(err.Error(), "missing.tar") {
		t.Errorf("a missing layer: %v, want an error naming it", err)
	}
}

// The image must not replace a layer it is built from.
func TestBuildRefusesOutputOverALayer(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd", "rootfs.tar", "layer.tar"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	layer := filepath.Join(dir, "layer.tar")
	_, err := Build(context.Background(), Spec{Arch: "x86_64", Kernel: filepath.Join(dir, "vmlinuz"), Initramfs: filepath.Join(dir, "initrd"),
		Rootfs: filepath.Join(dir, "rootfs.tar"), Layers: []string{layer}}, layer)
	if err == nil || !strings.Contains(err.Error(), "layer 1") {
		t.Errorf("Build over its own layer = %v, want a refusal naming layer 1", err)
	}
	if b, _ := os.ReadFile(layer); string(b) != "x" {
		t.Errorf("the layer was overwritten: %q", b)
	}
}
