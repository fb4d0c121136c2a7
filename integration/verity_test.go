package integration

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
	"github.com/ovroot/ovroot/verity"
)

// withVerity is the image.toml edit of a verity image.
func withVerity(im *config.Image) { im.Verity = true }

// imageVerity is the verity parameter an image's boot entry carries, as
// the host reads it from the image.
func imageVerity(t *testing.T, img image) verity.Info {
	t.Helper()
	cfg, cleanup, err := qemu.ForImage(img.path)
	if err != nil {
		t.Fatal(err)
	}
	cleanup()
	m := regexp.MustCompile(verity.CmdlineParam + `=(\S+)`).FindStringSubmatch(cfg.Cmdline)
	if m == nil {
		t.Fatalf("the image's command line has no %s=: %q", verity.CmdlineParam, cfg.Cmdline)
	}
	v, err := verity.ParseParam(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkVerityOnHost runs Debian's veritysetup on the root partition
// (label) of an image: the tree after the squashfs verifies against the
// root hash the boot entry carries.
func checkVerityOnHost(t *testing.T, img image, label string, v verity.Info) {
	t.Helper()
	if _, err := exec.LookPath("veritysetup"); err != nil {
		testenv.Missing(t, "veritysetup (Debian cryptsetup-bin) is not installed")
	}
	part := partition(t, img, label)
	out, err := exec.Command("veritysetup", "verify", "--hash-offset="+strconv.FormatInt(v.HashOffset(), 10), part, part, fmt.Sprintf("%x", v.RootHash)).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup verify of %s: %v\n%s", label, err, out)
	}
}

// checkVerityInGuest: /rom is mounted from the verity mapping, and
// ovrootctl status names the root hash the host put on the command line.
func checkVerityInGuest(t *testing.T, vm *qemu.VM, v verity.Info) {
	t.Helper()
	mounts := guest(t, vm, "mounts")
	rom := ""
	for _, line := range strings.Split(mounts, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == layout.RomDir {
			rom = f[0]
		}
	}
	if !strings.HasPrefix(rom, "/dev/dm-") {
		t.Errorf("/rom is mounted from %q, want the verity mapping /dev/dm-N\n%s", rom, mounts)
	}
	want := fmt.Sprintf("verity:    on, root hash %x; all %d blocks checked at boot", v.RootHash, v.DataBlocks)
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, want) {
		t.Errorf("ovrootctl status lacks %q:\n%s", want, st)
	}
}

// TestVerityCorruption flips one byte of a verity root at a seeded offset,
// once in the squashfs's data and once in its metadata (the inode and
// directory tables squashfs keeps after the data), and boots each: the
// init refuses the root naming the partition and the block the host
// flipped, and never mounts it (it tries again, and again refuses).
func TestVerityCorruption(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			img := buildImage(t, arch, makeSmallRootfs(t, arch), withVerity)
			v := imageVerity(t, img)
			checkVerityOnHost(t, img, layout.RootLabel, v)
			start, _ := partRange(t, img, layout.RootLabel)
			sb := make([]byte, 96)
			f, err := os.Open(img.path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.ReadAt(sb, start)
			f.Close()
			if err != nil || string(sb[:4]) != "hsqs" {
				t.Fatalf("no squashfs at the start of %s: %v", layout.RootLabel, err)
			}
			// struct squashfs_super_block: bytes_used at 40, inode_table_start at 64.
			used, inodes := int64(binary.LittleEndian.Uint64(sb[40:])), int64(binary.LittleEndian.Uint64(sb[64:]))
			if inodes <= 96 || inodes >= used {
				t.Fatalf("squashfs superblock: inode table at %d, %d bytes used", inodes, used)
			}
			seed := int64(20261203)
			rng := rand.New(rand.NewSource(seed))
			for _, c := range []struct {
				what string
				off  int64
			}{
				{"data", 96 + rng.Int63n(inodes-96)},
				{"metadata", inodes + rng.Int63n(used-inodes)},
			} {
				bad := copyImage(t, img)
				flipByte(t, bad.path, start+c.off)
				vm := boot(t, bad)
				want := fmt.Sprintf("ovroot: root integrity failure on %s: data block %d does not match the hash tree", layout.RootLabel, c.off/verity.BlockSize)
				expect(t, vm, want)
				expect(t, vm, "cannot build a root (attempt 2): root integrity failure")
				if strings.Contains(vm.Console(), "switching to") || strings.Contains(vm.Console(), "mounted /dev/") && strings.Contains(vm.Console(), "on /rom") {
					t.Errorf("%s: the corrupted root was mounted:\n%s", c.what, vm.Tail(40))
				}
				vm.Kill()
				t.Logf("%s: byte %d of the squashfs flipped (seed %d): refused, block %d named", c.what, c.off, seed, c.off/verity.BlockSize)
			}
		})
	}
}

// copyImage copies an image file (the original stays as built).
func copyImage(t *testing.T, img image) image {
	t.Helper()
	p := t.TempDir() + "/disk.img"
	if out, err := exec.Command("cp", "--sparse=always", img.path, p).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", img.path, err, out)
	}
	return image{arch: img.arch, path: p}
}

// flipByte flips the low bit of the byte at off of the file at p.
func flipByte(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
