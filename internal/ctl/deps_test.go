package ctl

import (
	"os/exec"
	"strings"
	"testing"
)

// ovrootctl reads what the init wrote; it must not link the init (the
// ext4 formatter, module loading, the compressors, the TOML decoder).
// What both read lives in package layout.
func TestDoesNotLinkTheInit(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to list the dependencies")
	}
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(cmd.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/ovroot/ovroot/boot", "github.com/ovroot/ovroot/config", "github.com/diskfs/", "github.com/u-root/", "github.com/ulikunitz/", "github.com/klauspost/", "github.com/BurntSushi/"} {
			if dep == banned || strings.HasPrefix(dep, banned) && strings.HasSuffix(banned, "/") {
				t.Errorf("ovrootctl links %s", dep)
			}
		}
	}
}
