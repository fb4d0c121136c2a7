package boot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// A data filesystem whose mount fails with EIO (the storage failed the
// mount's superblock write or a metadata read) is not repaired or
// formatted: e2fsck cannot fix storage, and the boot is volatile.
func TestBootDataMountIOError(t *testing.T) {
	sys := &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, mountSrcErr: map[string]error{"/dev/vda3": unix.EIO}}
	e := &bootEnv{cmdline: "console=ttyS0", sys: sys}
	b, err := e.run(t)
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if st := b.State(); st.Mode != layout.ModeVolatile {
		t.Errorf("mode %s, want volatile", st.Mode)
	}
	for _, c := range e.sys.calls {
		if strings.HasPrefix(c, "repair") || strings.HasPrefix(c, "format") || strings.HasPrefix(c, "replay") {
			t.Errorf("call %q after an I/O error", c)
		}
	}
	if w := "input/output error (the storage is failing): not repaired or formatted, left as it is"; !e.warned(w) {
		t.Errorf("no warning %q in:\n%s", w, strings.Join(e.warnings, "\n"))
	}
}

// A persistent boot records the data ext4's error count as it leaves it,
// for ovrootctl status to tell errors of the running system from old ones.
func TestBootNotesDataErrors(t *testing.T) {
	sys := &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}}
	e := &bootEnv{cmdline: "console=ttyS0", sys: sys, setup: func(root string) {
		p := filepath.Join(root, "sys/fs/ext4/vda3/errors_count")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("4\n"), 0o644)
	}}
	b, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if n := b.State().DataErrorsAtBoot; n == nil || *n != 4 {
		t.Errorf("DataErrorsAtBoot = %v, want 4", n)
	}
}
