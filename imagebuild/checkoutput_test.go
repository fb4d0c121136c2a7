package imagebuild

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An output inside the rootfs is refused however either path is spelled:
// relative or absolute, through a symlink to the output's directory or to
// the rootfs, and a rootfs of / holds every output. Otherwise the next
// build packs the previous image.
func TestCheckOutputInsideRootfsAnySpelling(t *testing.T) {
	base := t.TempDir()
	rootfs := filepath.Join(base, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "out"), 0o755)
	os.Symlink(filepath.Join(rootfs, "out"), filepath.Join(base, "outlink"))
	os.Symlink(rootfs, filepath.Join(base, "rootlink"))
	os.Mkdir(filepath.Join(base, "elsewhere"), 0o755)
	t.Chdir(base)
	cases := []struct {
		name, out, rootfs string
		inside            bool
	}{
		{"both absolute", filepath.Join(rootfs, "x.img"), rootfs, true},
		{"relative output, absolute rootfs", "rootfs/x.img", rootfs, true},
		{"absolute output, relative rootfs", filepath.Join(rootfs, "x.img"), "rootfs", true},
		{"dot-dot output", "elsewhere/../rootfs/out/x.img", rootfs, true},
		{"output directory through a symlink", "outlink/x.img", rootfs, true},
		{"absolute output directory through a symlink", filepath.Join(base, "outlink", "x.img"), "rootfs", true},
		{"rootfs through a symlink", "rootfs/out/x.img", "rootlink", true},
		{"rootfs /", "elsewhere/x.img", "/", true},
		{"beside the rootfs", "elsewhere/x.img", rootfs, false},
		{"a name that only starts like the rootfs", "rootfs.img", "rootfs", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := CheckOutput(c.out, []Input{{What: "rootfs", Path: c.rootfs}})
			switch {
			case c.inside && (err == nil || !strings.Contains(err.Error(), "is inside the rootfs directory")):
				t.Errorf("CheckOutput(%q, rootfs %q) = %v, want \"is inside the rootfs directory\"", c.out, c.rootfs, err)
			case !c.inside && err != nil:
				t.Errorf("CheckOutput(%q, rootfs %q) = %v, want no error", c.out, c.rootfs, err)
			}
		})
	}
}

// ovroot run and the tests read images through ListPartitions: a wrong
// file is named in our words, not go-diskfs's ("could not get file size
// for device zero.img").
func TestListPartitionsNotAnImage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "zero.img")
	os.WriteFile(empty, nil, 0o644)
	small := filepath.Join(dir, "small.img")
	os.WriteFile(small, make([]byte, 4096), 0o644)
	junk := filepath.Join(dir, "junk.img")
	os.WriteFile(junk, make([]byte, 1<<20), 0o644)
	for _, c := range []struct{ path, want string }{
		{empty, "zero.img is empty, not a disk image"},
		{small, "small.img is 4096 bytes: too small to hold a GPT"},
		{junk, "junk.img is not an ovroot disk image: no GPT partition table"},
		{filepath.Join(dir, "missing.img"), "missing.img: no such file or directory"},
		{dir, "is a directory, not a disk image"},
	} {
		_, err := ListPartitions(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "could not") {
			t.Errorf("ListPartitions(%s) = %v, want %q", filepath.Base(c.path), err, c.want)
		}
	}
}
