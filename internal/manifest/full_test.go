package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/internal/testenv"
	"golang.org/x/sys/unix"
)

// lines is the manifest as a map from path to line, for per-path checks.
func lines(entries []Entry) map[string]string {
	m := map[string]string{}
	for _, e := range entries {
		m[e.Path] = e.Line()
	}
	return m
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

const emptySHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// setUserXattr sets a user.* attribute, skipping where the filesystem of
// the temp dir has none (tmpfs before Linux 6.6).
func setUserXattr(t *testing.T, p, name, value string) {
	t.Helper()
	err := unix.Lsetxattr(p, name, []byte(value), 0)
	if errors.Is(err, unix.ENOTSUP) {
		testenv.Missing(t, "user.* xattrs on the filesystem of "+p)
	}
	must(t, err)
}

func TestWalkFull(t *testing.T) {
	me := fmt.Sprintf("owner=%d:%d", os.Getuid(), os.Getgid())
	tests := []struct {
		name  string
		root  bool // needs root
		make  func(t *testing.T, dir string)
		skip  func(rel string) bool
		lines map[string]string // path -> line, for the paths the case is about
	}{{
		name: "own files have the walker's owner and no link group",
		make: func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "a"), nil, 0o640))
			must(t, os.Symlink("a", filepath.Join(dir, "l")))
		},
		lines: map[string]string{
			"a": "a file 0640 0 " + emptySHA + " " + me + " link=- xattrs=-",
			"l": "l symlink 0777 0 a " + me + " link=- xattrs=-",
		},
	}, {
		// "d-x" sorts before "d/y" but is walked after it.
		name: "hard links share a group named by the smallest path",
		make: func(t *testing.T, dir string) {
			must(t, os.MkdirAll(filepath.Join(dir, "d"), 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "z"), nil, 0o644))
			must(t, os.Link(filepath.Join(dir, "z"), filepath.Join(dir, "d/y")))
			must(t, os.Link(filepath.Join(dir, "z"), filepath.Join(dir, "m")))
			must(t, os.Link(filepath.Join(dir, "z"), filepath.Join(dir, "d-x")))
			must(t, os.WriteFile(filepath.Join(dir, "alone"), nil, 0o644))
		},
		lines: map[string]string{
			"z":     "z file 0644 0 " + emptySHA + " " + me + " link=d-x xattrs=-",
			"m":     "m file 0644 0 " + emptySHA + " " + me + " link=d-x xattrs=-",
			"d/y":   "d/y file 0644 0 " + emptySHA + " " + me + " link=d-x xattrs=-",
			"d-x":   "d-x file 0644 0 " + emptySHA + " " + me + " link=d-x xattrs=-",
			"alone": "alone file 0644 0 " + emptySHA + " " + me + " link=- xattrs=-",
		},
	}, {
		name: "a link whose other names are skipped is no group",
		make: func(t *testing.T, dir string) {
			must(t, os.MkdirAll(filepath.Join(dir, "skipped"), 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o644))
			must(t, os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "skipped/f")))
		},
		skip:  func(rel string) bool { return rel == "skipped" },
		lines: map[string]string{"f": "f file 0644 0 " + emptySHA + " " + me + " link=- xattrs=-"},
	}, {
		name: "user xattrs sorted by name, values in hex",
		make: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "x")
			must(t, os.WriteFile(p, nil, 0o644))
			setUserXattr(t, p, "user.zz", "1")
			setUserXattr(t, p, "user.aa", "a b\n")
			setUserXattr(t, p, "user.empty", "")
		},
		lines: map[string]string{"x": "x file 0644 0 " + emptySHA + " " + me + " link=- xattrs=user.aa=6120620a,user.empty=,user.zz=31"},
	}, {
		name: "owners, setuid and trusted xattrs",
		root: true,
		make: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "su")
			must(t, os.WriteFile(p, nil, 0o644))
			must(t, os.Lchown(p, 1000, 2000))
			must(t, os.Chmod(p, 0o4755|fs.ModeSetuid))
			must(t, unix.Lsetxattr(p, "trusted.t", []byte{0, 0xff}, 0))
			must(t, os.Symlink("su", filepath.Join(dir, "l")))
			must(t, os.Lchown(filepath.Join(dir, "l"), 7, 8))
			must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
			must(t, os.Lchown(filepath.Join(dir, "fifo"), 0, 5))
		},
		lines: map[string]string{
			"su":   "su file 4755 0 " + emptySHA + " owner=1000:2000 link=- xattrs=trusted.t=00ff",
			"l":    "l symlink 0777 0 su owner=7:8 link=- xattrs=-",
			"fifo": "fifo fifo 0600 0 - owner=0:5 link=- xattrs=-",
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				testenv.RequireRoot(t, "chown and trusted.* xattrs")
			}
			dir := t.TempDir()
			tc.make(t, dir)
			got, err := WalkFull(dir, tc.skip)
			if err != nil {
				t.Fatal(err)
			}
			gl := lines(got)
			for p, want := range tc.lines {
				if gl[p] != want {
					t.Errorf("WalkFull line of %s:\n got %s\nwant %s", p, gl[p], want)
				}
			}
			// The plain Walk of the same tree is the old format, unchanged.
			plain, err := Walk(dir, tc.skip)
			if err != nil {
				t.Fatal(err)
			}
			if len(plain) != len(got) {
				t.Fatalf("Walk gave %d entries, WalkFull %d", len(plain), len(got))
			}
			for i := range plain {
				if want := strings.Join(strings.Fields(got[i].Line())[:5], " "); plain[i].Line() != want || plain[i].Ext != nil {
					t.Errorf("Walk line %q, want %q (WalkFull's without the extension)", plain[i].Line(), want)
				}
			}
		})
	}
}

// TestWalkFullLinkStructure: trees with the same names and the same link
// structure compare equal whichever name was created first; a different
// structure does not.
func TestWalkFullLinkStructure(t *testing.T) {
	mk := func(first, second string, linked bool) []Entry {
		dir := t.TempDir()
		must(t, os.WriteFile(filepath.Join(dir, first), []byte("x"), 0o644))
		if linked {
			must(t, os.Link(filepath.Join(dir, first), filepath.Join(dir, second)))
		} else {
			must(t, os.WriteFile(filepath.Join(dir, second), []byte("x"), 0o644))
		}
		must(t, os.Chmod(dir, 0o755))
		e, err := WalkFull(dir, nil)
		must(t, err)
		return e
	}
	a, b, c := mk("a", "b", true), mk("b", "a", true), mk("a", "b", false)
	if d := Diff(a, b); len(d) != 0 || Digest(a) != Digest(b) {
		t.Errorf("same link structure differs: %q", d)
	}
	if d := Diff(a, c); len(d) != 4 || Digest(a) == Digest(c) {
		t.Errorf("linked against unlinked: Diff = %q, want both names changed", d)
	}
}
