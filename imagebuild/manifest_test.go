package imagebuild

import (
	"archive/tar"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/internal/manifest"
	"github.com/ovroot/ovroot/internal/testenv"
)

// TestTarballImageManifest: the squashfs made from a tarball holds what
// the tarball says, owners, modes, device nodes and hard links included:
// the image, unpacked by unsquashfs as root, has the manifest FromTar
// computes from the tarball's own headers, plus the mount points the build
// adds (root's, 0755).
func TestTarballImageManifest(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	testenv.RequireRoot(t, "unsquashfs restores owners and device nodes only as root")
	ents := []tarEntry{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, Gid: 10}},
		{hdr: tar.Header{Name: "etc/shadow", Typeflag: tar.TypeReg, Mode: 0o640, Gid: 42}, body: "root:*:1::::::\n"},
		{hdr: tar.Header{Name: "home/alice/notes", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1000, Gid: 1001}, body: "alice\n"},
		{hdr: tar.Header{Name: "home/alice/.profile", Typeflag: tar.TypeSymlink, Linkname: "notes", Uid: 1000, Gid: 1000}},
		{hdr: tar.Header{Name: "usr/bin/passwd", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "setuid\n"},
		{hdr: tar.Header{Name: "usr/bin/wall", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 5}, body: "setgid\n"},
		{hdr: tar.Header{Name: "srv/shared/", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 33, Gid: 33}},
		{hdr: tar.Header{Name: "srv/pair-a", Typeflag: tar.TypeReg, Mode: 0o444, Uid: 7, Gid: 70}, body: "one inode\n"},
		{hdr: tar.Header{Name: "srv/shared/pair-b", Typeflag: tar.TypeLink, Linkname: "srv/pair-a"}},
		{hdr: tar.Header{Name: "var/spool/fifo", Typeflag: tar.TypeFifo, Mode: 0o620, Gid: 20}},
		{hdr: tar.Header{Name: "lib/nodes/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "lib/nodes/loop0", Typeflag: tar.TypeBlock, Mode: 0o660, Gid: 6, Devmajor: 7}},
	}
	tarball := writeTar(t, ents, false)
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	want, err := manifest.FromTar(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mountPoints {
		want = append(want, manifest.Entry{Path: m, Type: "dir", Perm: 0o755, Ext: &manifest.Ext{}})
	}
	sort.Slice(want, func(i, j int) bool { return want[i].Path < want[j].Path })

	img := filepath.Join(t.TempDir(), "root.sqfs")
	if _, err := MakeSquashfs(context.Background(), tarball, img, ""); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "unsquashed")
	if b, err := exec.Command("unsquashfs", "-no-progress", "-d", out, img).CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, b)
	}
	got, err := manifest.WalkFull(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := manifest.Diff(want, got); len(d) != 0 {
		t.Errorf("image of the tarball against the tarball's manifest (-want +got):\n%s", strings.Join(d, "\n"))
	}
}
