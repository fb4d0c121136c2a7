package boot

import (
	"os"
	"path/filepath"
	"testing"
)

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
