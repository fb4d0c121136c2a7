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
		for _, banned := range []string{"github.com/ovroot/ovroot/boot", "github.com/ovroot/ovroot/config", "github.com/diskfs/", "github.com/u-root/", "github.com/ulikunitz/", "github.com/klauspost/", "github.com/BurntSushi/", "github.com/google/go-containerregistry/"} {
			if dep == banned || strings.HasPrefix(dep, banned) && strings.HasSuffix(banned, "/") {
				t.Errorf("ovrootctl links %s", dep)
			}
		}
	}
}

// The network code (net/http, TLS, netfetch, ocifetch: about 3.5 MB of a 6.5 MB
// arm64 ovrootctl) is left out with the ovroot_nonet tag, for images
// that never fetch updates; without the tag it is in.
func TestNoNetTag(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to list the dependencies")
	}
	netPkgs := []string{"net/http", "crypto/tls", "github.com/ovroot/ovroot/internal/netfetch", "github.com/ovroot/ovroot/internal/ocifetch"}
	for _, tc := range []struct {
		tags string
		want bool
	}{{"", true}, {"ovroot_nonet", false}} {
		cmd := exec.Command("go", "list", "-tags", tc.tags, "-deps", ".")
		cmd.Env = append(cmd.Environ(), "GOOS=linux", "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps: %v\n%s", err, out)
		}
		deps := map[string]bool{}
		for _, d := range strings.Fields(string(out)) {
			deps[d] = true
		}
		for _, p := range netPkgs {
			if deps[p] != tc.want {
				t.Errorf("tags %q: ovrootctl links %s: %v, want %v", tc.tags, p, deps[p], tc.want)
			}
		}
	}
}
