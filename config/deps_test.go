package config

import (
	"os/exec"
	"strings"
	"testing"
)

// config is read on the host (image.toml) and on the device: it must not
// pull in device code such as the factory reset.
func TestNoDeviceDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to list the dependencies")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/ovroot/ovroot/reset" || dep == "github.com/ovroot/ovroot/boot" {
			t.Errorf("config imports %s", dep)
		}
	}
}
