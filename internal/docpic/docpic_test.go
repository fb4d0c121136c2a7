package docpic

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/overview.svg")

var file = filepath.Join("..", "..", "docs", "overview.svg")

// The committed picture is what Overview draws from package layout's
// names today, and well-formed XML.
func TestOverviewCurrent(t *testing.T) {
	got := Overview()
	d := xml.NewDecoder(bytes.NewReader(got))
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("Overview is not well-formed XML: %v", err)
		}
	}
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not what Overview draws now: run go test ./internal/docpic -update", file)
	}
}
