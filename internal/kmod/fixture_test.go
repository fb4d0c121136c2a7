package kmod

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fixtureDir is a modules tree of tiny .ko files (ELF objects with only a
// .modinfo section copied from Debian 6.1's amd64 modules: ext4 depends=
// jbd2,mbcache,crc16 and softdep=pre: crypto-crc32c, which crc32c_generic
// provides), so the closure is tested without `make kernels`.
var fixtureDir = filepath.Join("testdata", "modules", "6.1.0-fixture")

// TestFixtureClosureHardDeps: ext4's depends= are hard dependencies (it
// cannot load without them: the init waits for each and gives up on ext4
// when one fails), its softdep only orders crc32c_generic first.
func TestFixtureClosureHardDeps(t *testing.T) {
	ix, err := LoadIndex(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	if r := ix.Release(); r != "6.1.0-fixture" {
		t.Errorf("Release() = %q, want 6.1.0-fixture", r)
	}
	mods, err := ix.Closure("ext4", "squashfs", "overlay")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(mods), "crc32c_generic jbd2 mbcache crc16 ext4 squashfs"; got != want {
		t.Errorf("Closure(ext4, squashfs, overlay) = %q, want %q (overlay is built in)", got, want)
	}
	deps, after := ix.Waits(mods)
	wantDeps := map[string][]string{"ext4": {"crc16", "jbd2", "mbcache"}}
	wantAfter := map[string][]string{"ext4": {"crc32c_generic"}, "jbd2": {"crc32c_generic"}}
	if !reflect.DeepEqual(deps, wantDeps) {
		t.Errorf("Waits deps = %v, want %v", deps, wantDeps)
	}
	if !reflect.DeepEqual(after, wantAfter) {
		t.Errorf("Waits after = %v, want %v", after, wantAfter)
	}
	ext4, ok := ix.Lookup("ext4")
	if !ok || ext4.Path != "kernel/fs/ext4/ext4.ko" {
		t.Errorf("Lookup(ext4) = %+v, %v", ext4, ok)
	}
	if m, ok := ix.Lookup("crc32c_generic"); !ok || !contains(m.Aliases, "crypto-crc32c") {
		t.Errorf("crc32c_generic's aliases = %+v", m)
	}
}

// A modules directory named through a symlink is read through it, as
// --modules and modules_dir promise (WalkDir alone takes the link for a
// file: "no kernel modules").
func TestLoadIndexThroughSymlink(t *testing.T) {
	abs, err := filepath.Abs(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "modules")
	if err := os.Symlink(abs, link); err != nil {
		t.Fatal(err)
	}
	ix, err := LoadIndex(link)
	if err != nil {
		t.Fatalf("LoadIndex(%s -> %s) = %v", link, abs, err)
	}
	if _, ok := ix.Lookup("ext4"); !ok {
		t.Errorf("LoadIndex through a symlink finds no ext4")
	}
}
