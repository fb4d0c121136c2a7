package integration

import (
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

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
