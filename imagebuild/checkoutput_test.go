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
