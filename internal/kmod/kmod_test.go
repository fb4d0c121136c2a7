package kmod

import (
	"github.com/ovroot/ovroot/internal/testenv"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	data := []byte("license=GPL\x00depends=jbd2,mbcache,crc16\x00softdep=pre: crc32c post: extra-mod\x00" +
		"alias=fs-ext4\x00alias=ext3\x00name=ext4\x00vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \x00intree=Y\x00")
	m, err := ParseModinfo(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "ext4" || strings.Join(m.Depends, ",") != "jbd2,mbcache,crc16" ||
		strings.Join(m.SoftPre, ",") != "crc32c" || strings.Join(m.SoftPost, ",") != "extra-mod" ||
		strings.Join(m.Aliases, ",") != "fs-ext4,ext3" || m.Release != "6.1.0-56-amd64" {
		t.Errorf("got %+v", m)
	}
	m, err = ParseModinfo([]byte("depends=\x00name=virtio-blk\x00"))
	if err != nil || m.Name != "virtio_blk" || len(m.Depends) != 0 {
		t.Errorf("got %+v, %v", m, err)
	}
}

func names(mods []*Module) string {
	var s []string
	for _, m := range mods {
		s = append(s, m.Name)
	}
	return strings.Join(s, " ")
}

func testIndex() *Index {
	return NewIndex("/lib/modules/test", []Module{
		{Name: "ext4", Depends: []string{"jbd2", "mbcache", "crc16"}, SoftPre: []string{"crc32c"}, Aliases: []string{"fs-ext4"}},
		{Name: "jbd2", Depends: []string{"crc32c_generic"}},
		{Name: "mbcache"},
		{Name: "crc32c_generic", Aliases: []string{"crc32c"}},
		{Name: "crc32c_intel", Aliases: []string{"crc32c"}},
		{Name: "virtio_blk", Depends: []string{"virtio", "virtio_ring"}},
		{Name: "virtio_pci", Depends: []string{"virtio", "virtio_ring", "virtio_pci_modern_dev"}},
		{Name: "virtio", Release: "6.1.0-test"},
		{Name: "virtio_ring", Depends: []string{"virtio"}},
		{Name: "virtio_pci_modern_dev"},
		{Name: "a", Depends: []string{"b"}},
		{Name: "b", Depends: []string{"a"}},
		{Name: "broken", Depends: []string{"nowhere"}},
		{Name: "sp1", SoftPre: []string{"sp2"}, SoftPost: []string{"post"}},
		{Name: "sp2", SoftPre: []string{"sp1"}},
		{Name: "post", Depends: []string{"sp1"}},
	}, []string{"crc16", "squashfs"})
}

func TestClosureOrder(t *testing.T) {
	ix := testIndex()
	cases := []struct {
		in   []string
		want string
	}{
		// Dependencies first; crc16 is built in and left out; the crc32c
		// alias brings both providers (the kernel picks the one that fits
		// the CPU); a module named twice appears once.
		{[]string{"ext4"}, "crc32c_generic jbd2 mbcache crc32c_intel ext4"},
		{[]string{"virtio_pci", "virtio_blk", "virtio_pci"}, "virtio virtio_ring virtio_pci_modern_dev virtio_pci virtio_blk"},
		{[]string{"fs-ext4"}, "crc32c_generic jbd2 mbcache crc32c_intel ext4"},
		{[]string{"virtio-blk"}, "virtio virtio_ring virtio_blk"},
		{[]string{"squashfs"}, ""},
		// Soft dependencies that point at each other are not a cycle, and
		// a post: dependency comes after the module.
		{[]string{"sp1"}, "sp2 sp1 post"},
	}
	for _, c := range cases {
		got, err := ix.Closure(c.in...)
		if err != nil {
			t.Errorf("Closure(%v): %v", c.in, err)
			continue
		}
		if names(got) != c.want {
			t.Errorf("Closure(%v) = %q, want %q", c.in, names(got), c.want)
		}
	}
}

func TestClosureErrors(t *testing.T) {
	ix := testIndex()
	for in, want := range map[string]string{
		"a":       "dependency cycle: a -> b -> a",
		"broken":  "broken depends on nowhere, which is not in /lib/modules/test",
		"nothere": "module nothere: not a module, alias or built-in",
	} {
		_, err := ix.Closure(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Closure(%s) error = %v, want %q", in, err, want)
		}
	}
}

func TestRelease(t *testing.T) {
	if r := testIndex().Release(); r != "6.1.0-test" {
		t.Errorf("Release = %q", r)
	}
	if r := NewIndex("/x/6.9-dir", []Module{{Name: "m"}}, nil).Release(); r != "6.9-dir" {
		t.Errorf("Release without vermagic = %q", r)
	}
}

func TestLoadIndexErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadIndex(dir); err == nil || !strings.Contains(err.Error(), "no kernel modules") {
		t.Errorf("empty dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "fs.ko.xz"), []byte("x"), 0o644)
	if _, err := LoadIndex(dir); err == nil || !strings.Contains(err.Error(), "fs.ko.xz: compressed modules are not supported") {
		t.Errorf("compressed: %v", err)
	}
	os.Remove(filepath.Join(dir, "fs.ko.xz"))
	os.WriteFile(filepath.Join(dir, "junk.ko"), []byte("not an ELF file"), 0o644)
	if _, err := LoadIndex(dir); err == nil || !strings.Contains(err.Error(), "junk.ko") {
		t.Errorf("junk: %v", err)
	}
}

// TestDebianClosure reads a real Debian modules tree (from `make kernels`)
// and checks the closure the default image config needs: the disk driver,
// the filesystems, and crc32c (ext4's and jbd2's softdep: without it ext4
// with metadata_csum does not mount) on every arch. What a kernel has
// built in is left out: virtio and the PCI host bridge of QEMU's virt board
// on armmp.
func TestDebianClosure(t *testing.T) {
	cache := testenv.KernelCache()
	for _, c := range []struct{ dir, flavour string }{{"amd64", "amd64"}, {"arm64", "arm64"}, {"armhf", "armmp"}} {
		arch := c.dir
		t.Run(arch, func(t *testing.T) {
			dir := filepath.Join(cache, arch, "modules")
			if _, err := os.Stat(dir); err != nil {
				testenv.Missing(t, "no kernel in "+dir+" (run make kernels)")
			}
			ix, err := LoadIndex(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(ix.Release(), "-"+c.flavour) {
				t.Errorf("release %q, want a %s kernel", ix.Release(), c.flavour)
			}
			mods, err := ix.Closure("virtio_pci", "virtio_blk", "squashfs", "overlay", "ext4")
			if err != nil {
				t.Fatal(err)
			}
			pos := map[string]int{}
			for i, m := range mods {
				pos[m.Name] = i
			}
			for _, want := range []string{"virtio_pci", "virtio_blk", "squashfs", "overlay", "ext4", "jbd2", "mbcache", "crc32c_generic"} {
				if _, ok := pos[want]; !ok {
					t.Errorf("closure lacks %s: %s", want, names(mods))
				}
			}
			if pos["crc32c_generic"] > pos["ext4"] || pos["crc32c_generic"] > pos["jbd2"] {
				t.Errorf("crc32c_generic loads after ext4 or jbd2: %s", names(mods))
			}
			if arch == "armhf" {
				// The armmp kernel has these built in: a module list that
				// named them would not resolve, and the disk would need them.
				for _, b := range []string{"virtio", "virtio_ring", "pci_host_generic"} {
					if !ix.Builtin(b) {
						t.Errorf("armmp: %s is not built in; the default modules must carry it", b)
					}
				}
			}
			for _, m := range mods {
				for _, d := range m.Depends {
					if p, ok := pos[d]; ok && p > pos[m.Name] {
						t.Errorf("%s loads before its dependency %s", m.Name, d)
					} else if !ok && !ix.Builtin(d) {
						t.Errorf("%s's dependency %s is missing", m.Name, d)
					}
				}
			}
			if len(mods) > 40 {
				t.Errorf("closure has %d modules; only what was asked for belongs in the initramfs: %s", len(mods), names(mods))
			}
		})
	}
}
