package boot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// A write-protected data device (the kernel's ro flag, or a read-write
// mount it refuses), or one whose mount fails with an I/O error, boots
// volatile with that reason: never a repair, a format or a GPT write on it; a factory reset asked for on that boot is
// reported as not done in the state.
func TestBootReadOnlyData(t *testing.T) {
	for _, tc := range []struct {
		name     string
		roFlag   bool
		mountErr error
		cmdline  string
		probe    Content
		wantWarn string
	}{
		{name: "ro flag", roFlag: true, probe: ContentExt4, wantWarn: "VOLATILE: data partition /dev/vda3 (PARTLABEL=rootfs_data) is read-only (write-protected: /sys/class/block/vda3/ro is 1)"},
		{name: "ro flag, blank", roFlag: true, probe: ContentBlank, wantWarn: "is read-only (write-protected"},
		{name: "ro flag, reset asked", roFlag: true, probe: ContentExt4, cmdline: "ovroot.reset", wantWarn: "factory reset (trigger=cmdline) not stored"},
		{name: "mount refused EACCES", mountErr: unix.EACCES, probe: ContentExt4, wantWarn: "permission denied: the device refuses writes (write-protected?): not checked or formatted"},
		{name: "mount refused EROFS", mountErr: unix.EROFS, probe: ContentExt4, wantWarn: "the device refuses writes"},
		// Storage that fails the mount's own superblock write: an I/O
		// error, not damage e2fsck could mend.
		{name: "mount fails with EIO", mountErr: unix.EIO, probe: ContentExt4, wantWarn: "input/output error (the storage is failing): not repaired or formatted, left as it is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": tc.probe}}
			if tc.mountErr != nil {
				sys.mountSrcErr = map[string]error{"/dev/vda3": tc.mountErr}
			}
			e := &bootEnv{cmdline: "console=ttyS0 " + tc.cmdline, sys: sys, setup: func(root string) {
				if !tc.roFlag {
					return
				}
				for _, n := range []string{"vda", "vda3"} {
					p := filepath.Join(root, "sys/class/block", n, "ro")
					os.MkdirAll(filepath.Dir(p), 0o755)
					os.WriteFile(p, []byte("1\n"), 0o644)
				}
			}}
			b, err := e.run(t)
			if err != nil {
				t.Fatalf("Run() = %v, want a volatile boot", err)
			}
			if st := b.State(); st.Mode != layout.ModeVolatile {
				t.Errorf("mode %s, want volatile", st.Mode)
			}
			for _, c := range e.sys.calls {
				if strings.HasPrefix(c, "repair") || strings.HasPrefix(c, "format") || strings.HasPrefix(c, "replay") ||
					(tc.roFlag && (strings.HasPrefix(c, "open-disk") || strings.HasPrefix(c, "mount /dev/vda3"))) {
					t.Errorf("call %q on a read-only data device", c)
				}
			}
			if !e.warned(tc.wantWarn) {
				t.Errorf("no warning %q in:\n%s", tc.wantWarn, strings.Join(e.warnings, "\n"))
			}
			if tc.cmdline != "" {
				if w := strings.Join(b.State().Warnings, "\n"); !strings.Contains(w, "a factory reset was asked for (cmdline) but could not be done or stored") {
					t.Errorf("state warnings: %q", w)
				}
			}
		})
	}
}
