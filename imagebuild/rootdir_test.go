package imagebuild

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The image's root directory is root's, with the mode the rootfs says,
// whoever builds it: a directory rootfs's own mode, root-owned; a
// tarball's "./" entry's owner and mode; 0755 root:root without one.
// mksquashfs 4.5.1 ignores a pseudo definition for "/" and, built by an
// unprivileged user, makes "/" theirs: on the device that uid could then
// rename /sbin in the overlay and become root. Each case is built as root
// and as nobody (uid 65534), in a child process that runs this test
// binary, and the host reads "/" back from the image.
func TestRootDirOwner(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	if os.Getenv("OVROOT_ROOTDIR_HELPER") != "" {
		return // the child's side is rootDirHelper, run from TestMain-free code below
	}
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755) // testing's own directory above it
	// A copy of this test binary that nobody may run.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(base, "helper.test")
	copyExecutable(t, self, helper)

	dirRoot := filepath.Join(base, "dir-rootfs")
	os.MkdirAll(filepath.Join(dirRoot, "sbin"), 0o755)
	os.WriteFile(filepath.Join(dirRoot, "sbin", "init"), []byte("init"), 0o755)
	os.Chmod(dirRoot, 0o705) // readable by nobody, and a mode of its own
	os.Lchown(dirRoot, 1234, 1234)
	tarWith := func(name string, entries []tarEntry) string {
		p := filepath.Join(base, name)
		if err := os.WriteFile(p, tarBytes(entries), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withDot := tarWith("dot.tar", []tarEntry{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 5, Gid: 6}},
		{hdr: tarHeader("sbin/init"), body: "init"},
	})
	noDot := tarWith("nodot.tar", []tarEntry{{hdr: tarHeader("sbin/init"), body: "init"}})
	cases := []struct {
		name, rootfs, want string
	}{
		{"directory", dirRoot, "drwx---r-x 0/0"},
		{"tarball with dot entry", withDot, "drwx------ 5/6"},
		{"tarball without dot entry", noDot, "drwxr-xr-x 0/0"},
	}
	users := []struct {
		name string
		cred *syscall.Credential
	}{{"as this user", nil}}
	if os.Geteuid() == 0 {
		users = append(users, struct {
			name string
			cred *syscall.Credential
		}{"as nobody", &syscall.Credential{Uid: 65534, Gid: 65534}})
	}
	for _, c := range cases {
		for _, u := range users {
			t.Run(c.name+"/"+u.name, func(t *testing.T) {
				outDir := filepath.Join(base, strings.ReplaceAll(c.name+"-"+u.name, " ", "-"))
				os.Mkdir(outDir, 0o777)
				os.Chmod(outDir, 0o777)
				out := filepath.Join(outDir, "root.sqfs")
				cmd := exec.Command(helper, "-test.run=^TestRootDirHelper$")
				cmd.Env = append(os.Environ(), "OVROOT_ROOTDIR_HELPER="+c.rootfs+"\n"+out, "TMPDIR="+outDir, "HOME="+outDir)
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("build %s: %v\n%s", u.name, err, b)
				}
				got := rootLine(t, out)
				if !strings.HasPrefix(got, c.want) {
					t.Errorf("MakeSquashfs(%s) %s: / is %q, want %q", c.rootfs, u.name, got, c.want)
				}
			})
		}
	}
}

// TestRootDirHelper is TestRootDirOwner's child: it builds the squashfs it
// is told to, as whoever runs it.
func TestRootDirHelper(t *testing.T) {
	arg := os.Getenv("OVROOT_ROOTDIR_HELPER")
	if arg == "" {
		t.Skip("run by TestRootDirOwner")
	}
	src, out, _ := strings.Cut(arg, "\n")
	if _, err := MakeSquashfs(context.Background(), src, out, "gzip"); err != nil {
		t.Fatal(err)
	}
}

// rootLine is unsquashfs -lln's line for the root directory: "perm uid/gid".
func rootLine(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("unsquashfs", "-lln", "-d", "ROOT", img).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && f[len(f)-1] == "ROOT" {
			return f[0] + " " + f[1]
		}
	}
	t.Fatalf("no root directory in:\n%s", out)
	return ""
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// A rootfs named through a symlink to a directory is the directory's
// tree, as cp -r and tar -C take a named link; mksquashfs given the link
// itself stores only the link (an empty, unbootable image that leaks the
// host path).
func TestMakeSquashfsRootfsSymlink(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sbin"), 0o755)
	os.WriteFile(filepath.Join(tree, "sbin", "init"), []byte("init"), 0o755)
	link := filepath.Join(dir, "rootfs")
	if err := os.Symlink(tree, link); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "root.sqfs")
	if _, err := MakeSquashfs(context.Background(), link, out, "gzip"); err != nil {
		t.Fatal(err)
	}
	m := listing(t, out)
	if got := m["/sbin/init"]; !strings.HasPrefix(got, "-rwxr-xr-x 0/0") {
		t.Errorf("MakeSquashfs(%s -> %s): /sbin/init is %q; the image holds %v", link, tree, got, m)
	}
	if got := rootLine(t, out); !strings.HasPrefix(got, "d") {
		t.Errorf("the image's root is %q, not a directory", got)
	}
}

// An entry mksquashfs cannot store (a path of 4096 bytes or more, which a
// tarball can hold) is an error naming it, not an image without it whose
// summary counts it.
func TestMakeSquashfsLongPathRefused(t *testing.T) {
	needTools(t, "mksquashfs")
	deep := strings.Repeat(strings.Repeat("d", 250)+"/", 17) + "deep.txt"
	tarball := filepath.Join(t.TempDir(), "long.tar")
	if err := os.WriteFile(tarball, tarBytes([]tarEntry{
		{hdr: tarHeader("sbin/init"), body: "init"},
		{hdr: tarHeader(deep), body: "deep"},
	}), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := MakeSquashfs(context.Background(), tarball, filepath.Join(t.TempDir(), "o.sqfs"), "gzip")
	if err == nil || !strings.Contains(err.Error(), "left out") || !strings.Contains(err.Error(), "File name too long") {
		t.Fatalf("MakeSquashfs of a %d-byte path = %d entries, %v; want an error naming what mksquashfs left out", len(deep), n, err)
	}
}

// mksquashfs's warnings about entries it leaves out or stores empty are
// found and named relative to the rootfs; its other output is not.
func TestSkippedEntries(t *testing.T) {
	out := "Failed to read file /tmp/x/root/etc/shadow, creating empty file\n" +
		"Cannot stat /tmp/x/root/a/very/long/name: File name too long, ignoring\n" +
		"Parallel mksquashfs: Using 2 processors\nNumber of files 3\n"
	got := skippedEntries(out, "/tmp/x/root")
	want := []string{"Failed to read file /etc/shadow, creating empty file", "Cannot stat /a/very/long/name: File name too long, ignoring"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("skippedEntries = %q, want %q", got, want)
	}
}
