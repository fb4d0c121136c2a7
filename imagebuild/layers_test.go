package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Short forms for the tables: a file, a directory, and so on.
func reg(name, body string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, body: body}
}
func dir(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}
func hardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}
func wh(name string) tarEntry { return reg(name, "", 0o644) }

// tree describes an unpacked tree: every entry's type, mode, size,
// content or link target, mtime, link count and xattrs.
func treeOf(t testing.TB, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v mtime=%d nlink=%d", fi.Mode(), fi.ModTime().Unix(), st.Nlink)
		switch {
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += fmt.Sprintf(" %q", b)
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		buf := make([]byte, 4096)
		if n, err := unix.Llistxattr(p, buf); err == nil && n > 0 {
			names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			sort.Strings(names)
			for _, x := range names {
				vb := make([]byte, 4096)
				k, _ := unix.Lgetxattr(p, x, vb)
				v += fmt.Sprintf(" %s=%q", x, vb[:max(k, 0)])
			}
		}
		m[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diffTrees(want, got map[string]string) string {
	var b strings.Builder
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	var ks []string
	for k := range keys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		if want[k] != got[k] {
			fmt.Fprintf(&b, "%s:\n  -%s\n  +%s\n", k, want[k], got[k])
		}
	}
	return b.String()
}

// flat unpacks one plain tarball: what an image's layers must give.
func flat(t *testing.T, entries []tarEntry) ([]string, int, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	pseudo, n, err := unpack(context.Background(), bytes.NewReader(tarBytes(entries)), dir)
	if err != nil {
		t.Fatalf("unpack of the flattened tarball: %v", err)
	}
	return pseudo, n, dir
}

// xattrs that cannot be carried are refused naming the entry and the
// attribute, never dropped.
func TestXattrRefused(t *testing.T) {
	with := func(e tarEntry, k, v string) tarEntry {
		e.hdr.PAXRecords = map[string]string{k: v}
		return e
	}
	for _, tc := range []struct {
		name  string
		entry tarEntry
		want  string
	}{
		{"overlayfs's own", with(dir("d/"), "SCHILY.xattr.trusted.overlay.opaque", "y"), `entry "d/": xattr trusted.overlay.opaque`},
		{"namespace the kernel does not know", with(reg("f", "f", 0o644), "SCHILY.xattr.bogus.x", "1"), `entry "f": xattr bogus.x cannot be set`},
		{"on a device node", with(tarEntry{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}}, "SCHILY.xattr.user.x", "1"), `entry "null": xattr user.x`},
		{"ACL records", with(reg("f", "f", 0o644), "SCHILY.acl.access", "user::rw-"), `SCHILY.acl.access`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := unpack(context.Background(), bytes.NewReader(tarBytes([]tarEntry{tc.entry})), filepath.Join(t.TempDir(), "root"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("unpack = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// A tarball's xattrs reach the image: set on the unpacked tree, stored by
// mksquashfs.
func TestTarXattrsInImage(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	f := reg("bin/ping", "ping", 0o755)
	f.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "kept"}
	tarball := filepath.Join(t.TempDir(), "rootfs.tar")
	os.WriteFile(tarball, tarBytes([]tarEntry{dir("bin/"), f}), 0o644)
	img := filepath.Join(t.TempDir(), "root.sqfs")
	if _, err := MakeSquashfs(context.Background(), tarball, img, "gzip"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "x")
	if b, err := exec.Command("unsquashfs", "-no-progress", "-d", out, img, "/bin/ping").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, b)
	}
	buf := make([]byte, 64)
	k, err := unix.Lgetxattr(filepath.Join(out, "bin/ping"), "user.note", buf)
	if err != nil || string(buf[:k]) != "kept" {
		t.Errorf("user.note of /bin/ping in the image: %q, %v; want \"kept\"", buf[:max(k, 0)], err)
	}
}

// FuzzFlattenLayers applies two arbitrary layers in order, with OCI
// whiteouts, next to a host directory: nothing outside the unpack root
// changes, and every pseudo definition is one well-formed line.
func FuzzFlattenLayers(f *testing.F) {
	for _, target := range []string{"../outside", "../../outside"} {
		for _, entries := range escapeForms(target) {
			// The escape split across layers: the symlink below, the
			// rest above.
			f.Add(tarBytes(entries[:1]), tarBytes(entries[1:]))
		}
	}
	f.Add(tarBytes([]tarEntry{dir("a/"), reg("a/x", "x", 0o644), reg("f", "f", 0o4755), hardlink("l", "f")}),
		tarBytes([]tarEntry{wh("a/.wh..wh..opq"), wh(".wh.f"), reg("a/y", "y", 0o644), wh(".wh.a/../x")}))
	f.Add(tarBytes([]tarEntry{{hdr: tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "../../outside"}}}),
		tarBytes([]tarEntry{wh(".wh.s"), dir("s/"), reg("s/secret", "x", 0o644)}))
	defer func(old int64) { maxEntrySize = old }(maxEntrySize)
	maxEntrySize = 64 << 10
	f.Fuzz(func(t *testing.T, lower, upper []byte) {
		checkContained(t, func(root string) ([]string, error) {
			layers := []tarLayer{readerLayer(bytes.NewReader(lower)), readerLayer(bytes.NewReader(upper))}
			for i := range layers {
				layers[i].whiteouts = true
			}
			pseudo, _, err := unpackLayers(context.Background(), layers, root)
			return pseudo, err
		})
	})
}

// In a plain tarball, .wh. names are files like any other (whiteouts are
// for image layers), and a hard link keeps the bytes of the file it was
// made to when a later entry of that name replaces it, as tar extraction
// leaves them.
func TestTarLayerSemantics(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tar, equal []tarEntry
	}{
		{".wh. names", []tarEntry{reg("x", "x", 0o644), reg(".wh.x", "", 0o644), dir("d/"), reg("d/.wh..wh..opq", "", 0o644)},
			[]tarEntry{reg("x", "x", 0o644), reg(".wh.x", "", 0o644), dir("d/"), reg("d/.wh..wh..opq", "", 0o644)}},
		{"hard link to a replaced file", []tarEntry{reg("a", "old", 0o755), hardlink("l", "a"), reg("a", "new", 0o644)},
			[]tarEntry{reg("l", "old", 0o755), reg("a", "new", 0o644)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotPseudo, gotN, got := flat(t, tc.tar)
			wantPseudo, wantN, want := flat(t, tc.equal)
			sort.Strings(gotPseudo)
			sort.Strings(wantPseudo)
			if fmt.Sprint(gotPseudo) != fmt.Sprint(wantPseudo) || gotN != wantN {
				t.Errorf("pseudo %q, %d entries; want %q, %d", gotPseudo, gotN, wantPseudo, wantN)
			}
			if d := diffTrees(treeOf(t, want), treeOf(t, got)); d != "" {
				t.Errorf("tree (-want +got):\n%s", d)
			}
		})
	}
}

// Built by a user who may not set security.* (not root, no
// CAP_SYS_ADMIN), a file capability is refused naming the entry and the
// attribute, not dropped. Root sets it; this runs where the tests do not
// run as root (make unit as a user; as root, under setpriv).
func TestXattrSecurityNotRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root, who may set security.*; run the test binary as another user")
	}
	ping := reg("bin/ping", "ping", 0o755)
	// cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
	ping.hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}
	_, _, err := unpack(context.Background(), bytes.NewReader(tarBytes([]tarEntry{dir("bin/"), ping})), filepath.Join(t.TempDir(), "root"))
	if want := `entry "bin/ping": xattr security.capability cannot be set`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("unpack = %v, want %q", err, want)
	}
}

// A whiteout must name what it hides: ".wh." alone is refused, whether the
// whiteout is applied (an image's layers) or kept (a stacked layer); when
// applied it used to remove its own directory.
func TestWhiteoutOfNothing(t *testing.T) {
	lower := tarBytes([]tarEntry{dir("d/"), reg("d/x", "x", 0o644)})
	upper := tarBytes([]tarEntry{wh("d/.wh.")})
	for _, keep := range []bool{false, true} {
		layers := []tarLayer{readerLayer(bytes.NewReader(lower)), readerLayer(bytes.NewReader(upper))}
		for i := range layers {
			layers[i].whiteouts = true
		}
		layers[1].keepWhiteouts = keep
		_, _, err := unpackLayers(context.Background(), layers, filepath.Join(t.TempDir(), "root"))
		if err == nil || !strings.Contains(err.Error(), `tar entry "d/.wh.": a whiteout of ""`) {
			t.Errorf("keepWhiteouts=%v: unpack = %v, want the whiteout of nothing refused", keep, err)
		}
	}
}
