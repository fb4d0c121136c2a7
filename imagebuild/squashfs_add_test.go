package imagebuild

import (
	"archive/tar"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/lib", "opt/x"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "file"), nil, 0o644)
	for _, l := range [][2]string{
		{"usr/bin", "bin"},           // merged /usr, relative
		{"/usr/lib", "lib"},          // absolute: inside the root, not the host
		{"bin", "usr/sbin"},          // /usr/sbin -> /usr/bin
		{"x", "opt/xl"},              // relative to its own directory
		{"../../../../opt", "climb"}, // ".." stops at the root
		{"loop2", "loop1"}, {"loop1", "loop2"},
	} {
		if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		path, dir, missing, err string
	}{
		{"/usr/bin", "/usr/bin", "", ""},
		{"/bin", "/usr/bin", "", ""},
		{"/usr/sbin", "/usr/bin", "", ""},
		{"/lib", "/usr/lib", "", ""},
		{"/climb/x", "/opt/x", "", ""},
		{"/opt/xl", "/opt/x", "", ""},
		{"/sbin", "/", "sbin", ""},
		{"/usr/local/sbin", "/usr", "local/sbin", ""},
		{"/bin/new/dir", "/usr/bin", "new/dir", ""},
		{"/file/x", "", "", "not a directory"},
		{"/loop1", "", "", "too many levels"},
	}
	for _, tc := range cases {
		dir, missing, err := resolveDirIn(root, tc.path)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("resolveDirIn(%q) error = %v, want %q", tc.path, err, tc.err)
			}
			continue
		}
		if err != nil || dir != tc.dir || strings.Join(missing, "/") != tc.missing {
			t.Errorf("resolveDirIn(%q) = %q, %q, %v; want %q, %q", tc.path, dir, missing, err, tc.dir, tc.missing)
		}
	}
}

// ovrootctl is added where the rootfs has none (through its symlinks,
// with the directories it lacks), never over one it has, and the rootfs
// directory itself is not touched.
func TestMakeSquashfsAddsCtl(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	ctl := filepath.Join(t.TempDir(), "ctl binary") // a space: quoted for the shell
	if err := os.WriteFile(ctl, []byte("the ovrootctl\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	add := func() []Addition {
		return []Addition{{Path: CtlPath, Source: ctl, Mode: 0o755, Unless: ctlPaths}}
	}
	tree := func(t *testing.T, setup func(root string)) string {
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
		os.WriteFile(filepath.Join(root, "sbin/init"), []byte("init"), 0o755)
		setup(root)
		return root
	}
	cases := []struct {
		name   string
		rootfs func(t *testing.T) string
		at     string // where ovrootctl is expected in the image
		added  bool
	}{
		{"bare rootfs: dirs created", func(t *testing.T) string { return tree(t, func(string) {}) }, "/usr/sbin/ovrootctl", true},
		{"merged usr: through the symlink", func(t *testing.T) string {
			return tree(t, func(r string) {
				os.MkdirAll(filepath.Join(r, "usr/bin"), 0o755)
				os.Symlink("bin", filepath.Join(r, "usr/sbin"))
			})
		}, "/usr/bin/ovrootctl", true},
		{"rootfs has /bin/ovrootctl", func(t *testing.T) string {
			return tree(t, func(r string) {
				os.MkdirAll(filepath.Join(r, "bin"), 0o755)
				os.WriteFile(filepath.Join(r, "bin/ovrootctl"), []byte("own"), 0o755)
			})
		}, "/bin/ovrootctl", false},
		{"rootfs has a symlink named /usr/bin/ovrootctl", func(t *testing.T) string {
			return tree(t, func(r string) {
				os.MkdirAll(filepath.Join(r, "usr/bin"), 0o755)
				os.Symlink("/opt/ctl", filepath.Join(r, "usr/bin/ovrootctl"))
			})
		}, "/usr/bin/ovrootctl", false},
		{"tarball without ovrootctl", func(t *testing.T) string {
			return writeTar(t, []tarEntry{
				{hdr: tar.Header{Name: "sbin/", Typeflag: tar.TypeDir, Mode: 0o755}},
				{hdr: tar.Header{Name: "sbin/init", Typeflag: tar.TypeReg, Mode: 0o755}, body: "init"},
			}, true)
		}, "/usr/sbin/ovrootctl", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := tc.rootfs(t)
			before := treeListing(t, rootfs)
			img := filepath.Join(t.TempDir(), "root.sqfs")
			adds := add()
			if _, err := MakeSquashfs(context.Background(), rootfs, img, "gzip", adds...); err != nil {
				t.Fatal(err)
			}
			if after := treeListing(t, rootfs); after != before {
				t.Errorf("the rootfs was modified:\nbefore %s\nafter  %s", before, after)
			}
			ls := listing(t, img)
			got, ok := ls[tc.at]
			for k, v := range ls {
				if strings.HasPrefix(k, tc.at+" -> ") { // a symlink
					got, ok = v, true
				}
			}
			if !ok {
				t.Fatalf("no %s in the image; listing %v", tc.at, ls)
			}
			if tc.added {
				if !strings.HasPrefix(got, "-rwxr-xr-x 0/0") || catFile(t, img, tc.at) != "the ovrootctl\n" {
					t.Errorf("%s = %q, %q; want the host file, 0755 root", tc.at, got, catFile(t, img, tc.at))
				}
				if !strings.HasPrefix(adds[0].Note, "added "+tc.at) {
					t.Errorf("note = %q", adds[0].Note)
				}
			} else {
				if _, dup := ls["/usr/sbin/ovrootctl"]; dup && tc.at != "/usr/sbin/ovrootctl" {
					t.Errorf("ovrootctl added although the rootfs has %s", tc.at)
				}
				if !strings.HasPrefix(adds[0].Note, "rootfs has ") {
					t.Errorf("note = %q", adds[0].Note)
				}
			}
		})
	}
}

func TestMakeSquashfsAddMissingSource(t *testing.T) {
	needTools(t, "mksquashfs")
	root := t.TempDir()
	missing := filepath.Join(t.TempDir(), "ovrootctl")
	_, err := MakeSquashfs(context.Background(), root, filepath.Join(t.TempDir(), "r.sqfs"), "gzip",
		Addition{Path: CtlPath, Source: missing, Mode: 0o755, Unless: ctlPaths})
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), CtlPath) {
		t.Errorf("MakeSquashfs with a missing source = %v, want an error naming %s and %s", err, CtlPath, missing)
	}
}

// treeListing is a tree's names, modes and sizes in one string.
func treeListing(t *testing.T, root string) string {
	t.Helper()
	fi, err := os.Stat(root)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() {
		return fi.ModTime().String()
	}
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(p + " " + fi.Mode().String() + "\n")
		}
		return nil
	})
	return b.String()
}

func TestCheckStatic(t *testing.T) {
	dyn := "/bin/ls"
	if _, err := os.Stat(dyn); err != nil {
		t.Skip("no /bin/ls")
	}
	if err := CheckStatic(dyn, layout.X86_64); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		// /bin/ls on an arm64 host fails on the machine first.
		if !strings.Contains(err.Error(), "not for x86_64") {
			t.Errorf("CheckStatic(%s) = %v, want dynamically linked", dyn, err)
		}
	}
	notELF := filepath.Join(t.TempDir(), "e2fsck")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if err := CheckStatic(notELF, layout.X86_64); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("CheckStatic(script) = %v", err)
	}
	bin := staticBinary(t, layout.ARM64)
	if err := CheckStatic(bin, layout.ARM64); err != nil {
		t.Errorf("CheckStatic(static arm64) = %v", err)
	}
	if err := CheckStatic(bin, layout.X86_64); err == nil || !strings.Contains(err.Error(), "not for x86_64") {
		t.Errorf("CheckStatic(arm64 binary, x86_64) = %v, want a machine mismatch", err)
	}
}

// staticBinary is a static executable for arch (the Go toolchain makes
// one for any arch).
func staticBinary(t *testing.T, arch layout.Arch) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not on PATH")
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module s\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\nfunc main() {}\n"), 0o644)
	bin := filepath.Join(src, "s")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch.GOARCH(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
