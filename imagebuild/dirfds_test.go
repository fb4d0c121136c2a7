package imagebuild

import (
	"os"
	"path/filepath"
	"testing"
)

// treeDirs never goes through a symlink, as a directory on the way or as
// the directory asked for, and creates nothing outside the tree.
func TestTreeDirsNoFollow(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.MkdirAll(outside, 0o755)
	top := filepath.Join(base, "top")
	os.MkdirAll(filepath.Join(top, "real"), 0o755)
	os.Symlink(outside, filepath.Join(top, "link"))
	os.Symlink("real", filepath.Join(top, "rel"))
	root, err := os.OpenRoot(top)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	td, err := newTreeDirs(root)
	if err != nil {
		t.Fatal(err)
	}
	defer td.close()
	for _, rel := range []string{"link", "link/x", "link/x/y", "rel", "rel/x"} {
		if _, err := td.dir(rel, true); err == nil {
			t.Errorf("dir(%q) went through a symlink", rel)
		}
	}
	if err := td.inParent("link/f", func(int, string) error { return nil }); err == nil {
		t.Error("inParent(link/f) went through a symlink")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("created outside the tree: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(top, "real", "x")); err == nil {
		t.Error("created real/x through the relative symlink")
	}
	// A real directory is made and kept; forget drops it and below.
	if _, err := td.dir("a/b/c", true); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(top, "a/b/c")); err != nil || !fi.IsDir() {
		t.Fatalf("a/b/c not made: %v", err)
	}
	td.forget("a/b")
	if _, ok := td.open["a/b/c"]; ok {
		t.Error("forget(a/b) kept a/b/c")
	}
	if _, ok := td.open["a"]; !ok {
		t.Error("forget(a/b) dropped a")
	}
}
