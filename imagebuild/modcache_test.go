package imagebuild

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ovroot/ovroot/internal/kmod"
	"github.com/ovroot/ovroot/internal/testenv"
)

// The module index comes from the cache only while every module file is
// the one it was read from: a replaced, added or removed module is read
// anew, and an unreadable entry is read around, never trusted.
func TestModuleIndexCache(t *testing.T) {
	src := filepath.Join(testenv.KernelCache(), "amd64", "modules", "kernel", "drivers", "virtio")
	if _, err := os.Stat(filepath.Join(src, "virtio.ko")); err != nil {
		testenv.Missing(t, "no amd64 modules in the kernel cache (make kernels): "+err.Error())
	}
	dir := t.TempDir()
	put := func(name, as string) {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "kernel", ".tmp")
		os.MkdirAll(filepath.Dir(tmp), 0o755)
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "kernel", as)); err != nil {
			t.Fatal(err)
		}
	}
	put("virtio.ko", "virtio.ko")
	put("virtio_ring.ko", "virtio_ring.ko")
	c := moduleIndexCache{Dir: t.TempDir(), Keep: 8}

	// check loads through the cache and compares with a fresh read.
	check := func(what string, wantEntries int) *kmod.Index {
		t.Helper()
		got, err := c.load(dir)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		want, err := kmod.LoadIndex(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the cached index differs from the modules read anew", what)
		}
		ents, _ := filepath.Glob(filepath.Join(c.Dir, "*.gob"))
		if len(ents) != wantEntries {
			t.Errorf("%s: %d cache entries, want %d", what, len(ents), wantEntries)
		}
		return got
	}
	check("first load", 1)
	check("second load", 1)
	ents, _ := filepath.Glob(filepath.Join(c.Dir, "*.gob"))

	// A hit is what the entry says: an entry made to say something else
	// (a module of another name) is what load returns.
	key, err := c.key(dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(ents[0]) != key+".gob" {
		t.Fatalf("entry %s, key %s", ents[0], key)
	}
	saved, _ := os.ReadFile(ents[0])
	other := filepath.Join(t.TempDir(), "other")
	os.MkdirAll(other, 0o755)
	data, _ := os.ReadFile(filepath.Join(src, "virtio_mmio.ko"))
	os.WriteFile(filepath.Join(other, "virtio_mmio.ko"), data, 0o644)
	oc := moduleIndexCache{Dir: t.TempDir()}
	if _, err := oc.load(other); err != nil {
		t.Fatal(err)
	}
	e, _ := filepath.Glob(filepath.Join(oc.Dir, "*.gob"))
	b, _ := os.ReadFile(e[0])
	os.WriteFile(ents[0], b, 0o644)
	ix, err := c.load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ix.Lookup("virtio_mmio"); !ok {
		t.Error("load did not take the index from the cache entry")
	}
	os.WriteFile(ents[0], saved, 0o644)

	// A replaced module (same name, new content), an added one, a removed
	// one: each a miss.
	put("virtio_mmio.ko", "virtio.ko")
	if ix := check("replaced module", 2); ix == nil {
		t.Fatal("no index")
	} else if _, ok := ix.Lookup("virtio"); ok {
		t.Error("replaced module: the index still has virtio")
	}
	put("virtio.ko", "virtio2.ko")
	check("added module", 3)
	os.Remove(filepath.Join(dir, "kernel", "virtio_ring.ko"))
	check("removed module", 4)

	// An entry that does not decode is read around.
	key, _ = c.key(dir)
	os.WriteFile(filepath.Join(c.Dir, key+".gob"), []byte("garbage"), 0o644)
	check("garbage entry", 4)
}
