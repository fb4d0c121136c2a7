package imagebuild

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ovroot/ovroot/initramfs"
	"github.com/ovroot/ovroot/layout"
)

// The cache key covers symbolic links (the emergency shell's commands are
// links to /init, with no host file behind them): a link is keyed by its
// target, and a changed target is another key.
func TestInitrdCacheKeyLinks(t *testing.T) {
	init := filepath.Join(t.TempDir(), "init")
	if err := os.WriteFile(init, []byte("an init"), 0o755); err != nil {
		t.Fatal(err)
	}
	key := func(target string) string {
		t.Helper()
		o := initramfs.Options{Arch: layout.X86_64, InitBinary: init,
			Files: []initramfs.File{{Path: "/bin/sh", Link: target, Mode: 0o777}}}
		k, _, err := initrdCache{}.key(o, nil)
		if err != nil {
			t.Fatalf("key with a link to %s: %v", target, err)
		}
		return k
	}
	if a, b := key("/init"), key("/init"); a != b {
		t.Errorf("the same inputs gave two keys: %s, %s", a, b)
	}
	if key("/init") == key("/sbin/other") {
		t.Error("a changed link target gave the same key")
	}
}
