package boot

import (
	"os/exec"
	"strings"
	"testing"
)

// The fault hook is for test builds only: the firmware's init must not
// carry it. go list shows which files each build compiles.
func TestFaultHookOnlyInTestBuilds(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to list the package's files")
	}
	for _, tc := range []struct {
		tags      string
		want, not string
	}{
		{tags: "", want: "fault.go", not: "fault_ovroot_faults.go"},
		{tags: "ovroot_faults", want: "fault_ovroot_faults.go", not: " fault.go"},
	} {
		cmd := exec.Command("go", "list", "-tags="+tc.tags, "-f", "{{.GoFiles}}", ".")
		cmd.Env = append(cmd.Environ(), "GOOS=linux", "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -tags=%q: %v\n%s", tc.tags, err, out)
		}
		files := " " + strings.Trim(strings.TrimSpace(string(out)), "[]") + " "
		if !strings.Contains(files, " "+tc.want+" ") || strings.Contains(files, tc.not+" ") {
			t.Errorf("go list -tags=%q files = %s, want %s and not %s", tc.tags, files, tc.want, strings.TrimSpace(tc.not))
		}
	}
}
