package integration

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ovroot/ovroot/layout"
)

const (
	factoryConf    = "/etc/factory.conf"
	factoryContent = "factory-setting=1\n"
	bigFile        = "/usr/share/big.bin"
	bigFileSize    = 12<<20 + 12345 // > 10 MB, not a multiple of any block size
)

// makeRootfs writes a test root filesystem: the guest agent as /sbin/init,
// ovrootctl, and a tree big enough to catch an incomplete squashfs (the
// go-diskfs writer lost entries past ~500): 60 directories of 90 files,
// a 12 MB file, hidden files, symlinks, a hard link and an empty directory.
func makeRootfs(t *testing.T, arch layout.Arch) string {
	t.Helper()
	return writeRootfs(t, arch, 60, true)
}

// makeSmallRootfs is the same root with 10 directories and no big file:
// for the tests that boot many times and do not check completeness.
func makeSmallRootfs(t *testing.T, arch layout.Arch) string {
	t.Helper()
	return writeRootfs(t, arch, 10, false)
}

func writeRootfs(t *testing.T, arch layout.Arch, dirs int, withBig bool) string {
	t.Helper()
	agent, ctl := buildGuest(t, arch)
	root := filepath.Join(t.TempDir(), "rootfs")
	mkdir := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, data []byte, mode os.FileMode) {
		t.Helper()
		mkdir(filepath.Dir(p))
		if err := os.WriteFile(filepath.Join(root, p), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	copyFile := func(src, dst string) {
		t.Helper()
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		write(dst, data, 0o755)
	}
	mkdir("/")
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/var/empty", "/rom", "/overlay"} {
		mkdir(d)
	}
	copyFile(agent, "/sbin/init")
	copyFile(ctl, "/usr/bin/ovrootctl")
	write(factoryConf, []byte(factoryContent), 0o644)
	write("/etc/hostname", []byte("ovroot-test\n"), 0o644)
	write("/root/.ssh/authorized_keys", []byte("ssh-ed25519 AAAA factory\n"), 0o600)
	write("/etc/.hidden", []byte("dotfile\n"), 0o600)
	for d := 0; d < dirs; d++ {
		for f := 0; f < 90; f++ {
			write(fmt.Sprintf("/data/d%02d/f%03d.txt", d, f), []byte(fmt.Sprintf("dir %d file %d\n", d, f)), 0o644)
		}
	}
	if withBig {
		big := make([]byte, bigFileSize)
		if _, err := io.ReadFull(rand.New(rand.NewSource(42)), big); err != nil {
			t.Fatal(err)
		}
		write(bigFile, big, 0o644)
	}
	for _, l := range []struct{ target, name string }{
		{"/etc/hostname", "/etc/hostname.link"},
		{"../d01/f001.txt", "/data/d00/rel.link"},
		{"/nonexistent", "/etc/dangling.link"},
	} {
		if err := os.Symlink(l.target, filepath.Join(root, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(root, "/data/d00/f000.txt"), filepath.Join(root, "/data/hardlink.txt")); err != nil {
		t.Fatal(err)
	}
	return root
}

// makeSmallRootfsTar is makeSmallRootfs as a tarball, with what a
// directory built without root cannot hold and an image from a directory
// loses (everything there is root's): files, directories and a symlink
// owned by several users and groups, setuid and setgid programs, a
// hard-link pair of someone else's file, a fifo and device nodes. The
// rootfs's own /etc belongs to group 10, so a directory the init or a
// reset re-creates in the upper shows if it does not copy the owner up.
func makeSmallRootfsTar(t *testing.T, arch layout.Arch) string {
	t.Helper()
	dir := makeSmallRootfs(t, arch)
	out := filepath.Join(t.TempDir(), "rootfs.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	mtime := time.Unix(1700000000, 0)
	write := func(h *tar.Header, body []byte) {
		t.Helper()
		h.Format, h.ModTime = tar.FormatPAX, mtime
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar %s: %v", h.Name, err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	type ino struct{ dev, ino uint64 }
	first := map[ino]string{} // hard links: the first name of each inode
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		target := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return err
		}
		h.Name, h.Uname, h.Gname, h.Uid, h.Gid = "./"+filepath.ToSlash(rel), "", "", 0, 0
		if rel == "etc" {
			h.Gid = 10
		}
		var body []byte
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().IsRegular() && st.Nlink > 1 {
			k := ino{uint64(st.Dev), st.Ino}
			if name, ok := first[k]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, name, 0
				write(h, nil)
				return nil
			}
			first[k] = h.Name
		}
		if fi.Mode().IsRegular() {
			if body, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		if fi.IsDir() {
			h.Name += "/"
		}
		write(h, body)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		h    tar.Header
		body string
	}{
		{h: tar.Header{Name: "home/alice/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}},
		{h: tar.Header{Name: "home/alice/notes", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1001}, body: "alice\n"},
		{h: tar.Header{Name: "home/alice/.profile", Typeflag: tar.TypeSymlink, Linkname: "notes", Mode: 0o777, Uid: 1000, Gid: 1000}},
		{h: tar.Header{Name: "var/log/app.log", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 0, Gid: 4}, body: "log\n"},
		{h: tar.Header{Name: "usr/bin/passwd", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "setuid\n"},
		{h: tar.Header{Name: "usr/bin/wall", Typeflag: tar.TypeReg, Mode: 0o2755, Uid: 0, Gid: 5}, body: "setgid\n"},
		{h: tar.Header{Name: "srv/shared/", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 33, Gid: 33}},
		{h: tar.Header{Name: "srv/pair-a", Typeflag: tar.TypeReg, Mode: 0o444, Uid: 7, Gid: 70}, body: "one inode, two names\n"},
		{h: tar.Header{Name: "srv/shared/pair-b", Typeflag: tar.TypeLink, Linkname: "srv/pair-a"}},
		{h: tar.Header{Name: "var/spool/fifo", Typeflag: tar.TypeFifo, Mode: 0o620, Uid: 0, Gid: 20}},
		{h: tar.Header{Name: "lib/nodes/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{h: tar.Header{Name: "lib/nodes/loop0", Typeflag: tar.TypeBlock, Mode: 0o660, Gid: 6, Devmajor: 7}},
	} {
		write(&e.h, []byte(e.body))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}
