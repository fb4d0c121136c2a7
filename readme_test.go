package ovroot

import (
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestReadmeLayout keeps the Layout table (docs/code-layout.md, which the
// README links) and the tree in step: one row per package `go list ./...`
// reports, and no row for a package that is gone.
func TestReadmeLayout(t *testing.T) {
	out, err := exec.Command("go", "list", "./...").Output()
	if err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	const mod = "github.com/ovroot/ovroot"
	var pkgs []string
	for _, p := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p, mod), "/")
		if rel == "" {
			rel = "."
		}
		pkgs = append(pkgs, rel)
	}
	readme, err := os.ReadFile("docs/code-layout.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "# Layout\n")
	if !ok {
		t.Fatal("docs/code-layout.md has no \"# Layout\" section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\|")
	var rows []string
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		rows = append(rows, m[1])
	}
	sort.Strings(pkgs)
	sort.Strings(rows)
	if strings.Join(pkgs, "\n") != strings.Join(rows, "\n") {
		t.Errorf("docs/code-layout.md rows and go list ./... differ:\nREADME: %v\ngo list: %v", rows, pkgs)
	}
}
