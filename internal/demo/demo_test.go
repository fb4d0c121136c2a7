package demo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// Install lays out the root the demo's init expects: the init at
// /sbin/init with poweroff, reboot and halt pointing at it (u-root's
// poweroff, which did not sync, is gone), the shell as /bin/sh, the
// release and a welcome that names it and what to try.
func TestInstall(t *testing.T) {
	progs := t.TempDir()
	for _, p := range []string{"init", "ovrootctl", "rush", "cat"} {
		if err := os.WriteFile(filepath.Join(progs, p), []byte("#!"+p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(t.TempDir(), "root")
	if err := Install(root, progs, layout.ARM64, "2", []string{"cat"}); err != nil {
		t.Fatal(err)
	}
	for link, want := range map[string]string{"bin/poweroff": "#!init", "bin/reboot": "#!init", "bin/halt": "#!init", "bin/sh": "#!rush", "sbin/init": "#!init", "usr/bin/ovrootctl": "#!ovrootctl", "bin/cat": "#!cat"} {
		if b, err := os.ReadFile(filepath.Join(root, link)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", link, b, err, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "bin/poweroff")); err != nil || filepath.IsAbs(target) {
		t.Errorf("bin/poweroff -> %q, %v: want a relative link (the root is built on the host)", target, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, ReleaseFile)); string(b) != "2\n" {
		t.Errorf("%s = %q", ReleaseFile, b)
	}
	motd, _ := os.ReadFile(filepath.Join(root, "etc/motd"))
	for _, want := range []string{"release 2 (arm64)", "ovrootctl status", "echo hello > /etc/hello", "ovrootctl changes", "poweroff", "ovrootctl factory-reset --reboot", "ovrootctl mark-good"} {
		if !strings.Contains(string(motd), want) {
			t.Errorf("the welcome lacks %q:\n%s", want, motd)
		}
	}
	if w := Welcome(layout.ARM64, "1"); !strings.Contains(w, "ovrootctl upgrade /dev/vdb --reboot") {
		t.Errorf("release 1's welcome does not offer the upgrade:\n%s", w)
	}
	for _, line := range strings.Split(string(motd)+Welcome(layout.X86_64, "1"), "\n") {
		if len(line) > 79 {
			t.Errorf("welcome line of %d columns (a serial console is 80): %q", len(line), line)
		}
	}
	for _, c := range Commands {
		if c == "poweroff" || c == "shutdown" || c == "reboot" {
			t.Errorf("Commands has u-root's %s, which powers off without syncing", c)
		}
	}
}
