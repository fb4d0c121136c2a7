package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// tarBytes is writeTar without a test: the fuzz seeds are made with it.
func tarBytes(entries []tarEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = mtime
		h.Format = tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			panic(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

// compressFile writes p compressed with kind ("plain", "gzip", "xz",
// "zstd") to a new file named rootfs.tar, whatever the kind.
func compressFile(t *testing.T, p, kind string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var w io.WriteCloser
	switch kind {
	case "plain":
		return p
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "xz":
		if w, err = xz.NewWriter(&buf); err != nil {
			t.Fatal(err)
		}
	case "zstd":
		if w, err = zstd.NewWriter(&buf); err != nil {
			t.Fatal(err)
		}
	case "bzip2":
		needTools(t, "bzip2")
		cmd := exec.Command("bzip2", "-c")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		w = nopCloser{bytes.NewBuffer(out), &buf}
		data = nil
	default:
		t.Fatalf("unknown compression %q", kind)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// nopCloser writes pre-compressed bytes on Close.
type nopCloser struct {
	pre *bytes.Buffer
	dst *bytes.Buffer
}

func (n nopCloser) Write(p []byte) (int, error) { return len(p), nil }
func (n nopCloser) Close() error                { _, err := n.dst.ReadFrom(n.pre); return err }

// snapshot records every entry below dir (type, mode, size, content,
// link target, mtime), so a test can prove nothing there changed.
func snapshot(t testing.TB, dir string, skip string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			m[p] = "error " + err.Error()
			return nil
		}
		if skip != "" && p == skip {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			m[p] = "error " + err.Error()
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v %d mtime=%d ino=%d nlink=%d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), st.Ino, st.Nlink)
		switch {
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			v += " " + string(data)
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		m[p] = v
		return nil
	})
	return m
}

func diffSnapshots(before, after map[string]string) string {
	var b strings.Builder
	for k, v := range before {
		if a, ok := after[k]; !ok {
			fmt.Fprintf(&b, "removed %s (%s)\n", k, v)
		} else if a != v {
			fmt.Fprintf(&b, "changed %s: %s => %s\n", k, v, a)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			fmt.Fprintf(&b, "created %s (%s)\n", k, v)
		}
	}
	return b.String()
}

// makeOutside is a host directory an archive must not reach: a file, a
// secret, a directory with a file in it. Times are in the past, so a
// touch shows.
func makeOutside(t testing.TB, dir string) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, "victimdir"), 0o755)
	os.WriteFile(filepath.Join(dir, "victim"), []byte("host file\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("host secret\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "victimdir", "keep"), []byte("keep me\n"), 0o644)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, p := range []string{"victim", "secret", "victimdir/keep", "victimdir", "."} {
		os.Chtimes(filepath.Join(dir, p), old, old)
	}
}

// escapeForms are archives that go through a symlink to a host directory
// (target) and then create, remove, replace, read or touch what is there.
func escapeForms(target string) map[string][]tarEntry {
	evil := tarEntry{hdr: tar.Header{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
	return map[string][]tarEntry{
		// A symlink entry at evil/victimdir: the old unpack removed
		// whatever was there (recursively) to make room.
		"delete": {evil, {hdr: tar.Header{Name: "evil/victimdir", Typeflag: tar.TypeSymlink, Linkname: "x"}}},
		// A hard link at evil/victim replaced the host file with the
		// archive's payload.
		"replace": {evil,
			{hdr: tar.Header{Name: "payload", Typeflag: tar.TypeReg, Mode: 0o644}, body: "payload\n"},
			{hdr: tar.Header{Name: "evil/victim", Typeflag: tar.TypeLink, Linkname: "payload"}}},
		// A directory entry below evil was made on the host.
		"create": {evil, {hdr: tar.Header{Name: "evil/newdir/", Typeflag: tar.TypeDir, Mode: 0o755}},
			{hdr: tar.Header{Name: "evil/newfile", Typeflag: tar.TypeReg, Mode: 0o644}, body: "dropped\n"}},
		// A device entry named evil/secret is never created on disk, so a
		// hard link to it linked the host's file into the image.
		"hard-link read": {evil,
			{hdr: tar.Header{Name: "evil/secret", Typeflag: tar.TypeChar, Mode: 0o600, Devmajor: 1, Devminor: 3}},
			{hdr: tar.Header{Name: "stolen", Typeflag: tar.TypeLink, Linkname: "evil/secret"}}},
		// A file below evil, unpacked before evil became a symlink, got
		// its time set through it: the host file's mtime changed.
		"touch": {{hdr: tar.Header{Name: "evil/victim", Typeflag: tar.TypeReg, Mode: 0o644}, body: "x"}, evil},
	}
}

// No archive reaches outside the unpack root through a symlink it holds,
// absolute or relative: each form is refused, naming the entry, and the
// host directory is exactly as before.
func TestTarSymlinkEscape(t *testing.T) {
	needTools(t, "mksquashfs")
	for _, abs := range []bool{true, false} {
		for name, entries := range escapeForms("OUTSIDE") {
			t.Run(fmt.Sprintf("%s/abs=%v", name, abs), func(t *testing.T) {
				base := t.TempDir()
				outside := filepath.Join(base, "outside")
				makeOutside(t, outside)
				// The unpack root is $TMPDIR/ovroot-rootfs-*/root: a
				// relative target climbs out of it by absolute depth.
				tmpdir := filepath.Join(base, "tmp")
				os.Mkdir(tmpdir, 0o755)
				t.Setenv("TMPDIR", tmpdir)
				target := outside
				if !abs {
					target = "../../../outside"
				}
				for i := range entries {
					if entries[i].hdr.Linkname == "OUTSIDE" {
						entries[i].hdr.Linkname = target
					}
				}
				tarball := filepath.Join(base, "evil.tar")
				os.WriteFile(tarball, tarBytes(entries), 0o644)
				before := snapshot(t, outside, "")
				img := filepath.Join(base, "root.sqfs")
				_, err := MakeSquashfs(context.Background(), tarball, img, "gzip")
				if d := diffSnapshots(before, snapshot(t, outside, "")); d != "" {
					t.Errorf("the host directory changed:\n%s", d)
				}
				if err == nil || !strings.Contains(err.Error(), `"evil"`) || !strings.Contains(err.Error(), "symlink") {
					t.Errorf("MakeSquashfs = %v, want an error naming the symlink entry \"evil\"", err)
				}
				if left, _ := filepath.Glob(filepath.Join(tmpdir, "*")); len(left) > 0 {
					t.Errorf("temporary files left: %v", left)
				}
			})
		}
	}
}

// A symlink that points outside the tree is a valid rootfs entry: it is
// stored as a symlink, never followed.
func TestTarSymlinkOutsideKept(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	tarball := writeTar(t, []tarEntry{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/resolv.conf", Typeflag: tar.TypeSymlink, Linkname: "/run/resolv.conf"}},
		{hdr: tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../../.."}},
		{hdr: tar.Header{Name: "lib", Typeflag: tar.TypeSymlink, Linkname: "usr/lib"}},
		{hdr: tar.Header{Name: "usr/lib/libc.so", Typeflag: tar.TypeReg, Mode: 0o644}, body: "libc"},
	}, false)
	img := filepath.Join(t.TempDir(), "root.sqfs")
	if _, err := MakeSquashfs(context.Background(), tarball, img, "gzip"); err != nil {
		t.Fatal(err)
	}
	got := listing(t, img)
	for _, p := range []string{"/etc/resolv.conf -> /run/resolv.conf", "/up -> ../../../..", "/lib -> usr/lib", "/usr/lib/libc.so"} {
		if _, ok := got[p]; !ok {
			t.Errorf("%s missing from the image; listing %v", p, got)
		}
	}
}

// GNU sparse ("S") and PAX sparse entries are unpacked with their holes:
// a 2 GiB entry with 4 KiB of data takes kilobytes on the host, not 2 GiB.
func TestTarSparse(t *testing.T) {
	needTools(t, "tar")
	for _, format := range []string{"gnu", "pax"} {
		t.Run(format, func(t *testing.T) {
			src := t.TempDir()
			big := filepath.Join(src, "big")
			f, err := os.Create(big)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(bytes.Repeat([]byte("D"), 4096), 1<<30)
			f.Truncate(2 << 30)
			f.Close()
			tarball := filepath.Join(t.TempDir(), "sparse.tar")
			if out, err := exec.Command("tar", "--sparse", "--format="+format, "-C", src, "-cf", tarball, "big").CombinedOutput(); err != nil {
				t.Fatalf("tar: %v\n%s", err, out)
			}
			dir := filepath.Join(t.TempDir(), "root")
			if _, _, err := unpack(context.Background(), mustOpen(t, tarball), dir); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(filepath.Join(dir, "big"))
			if err != nil {
				t.Fatal(err)
			}
			used := fi.Sys().(*syscall.Stat_t).Blocks * 512
			if fi.Size() != 2<<30 || used > 1<<20 {
				t.Errorf("unpacked big: size %d, %d bytes on disk; want 2GiB with at most 1MiB on disk", fi.Size(), used)
			}
			g, _ := os.Open(filepath.Join(dir, "big"))
			defer g.Close()
			buf := make([]byte, 4097)
			g.ReadAt(buf, 1<<30-1)
			if buf[0] != 0 || string(buf[1:]) != strings.Repeat("D", 4096) {
				t.Error("the data of the sparse entry is not where the archive put it")
			}
			if format != "gnu" {
				return
			}
			// Through mksquashfs: the image holds a 2 GiB file in kilobytes.
			needTools(t, "mksquashfs", "unsquashfs")
			img := filepath.Join(t.TempDir(), "root.sqfs")
			if _, err := MakeSquashfs(context.Background(), tarball, img, "gzip"); err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(img); fi.Size() > 1<<20 {
				t.Errorf("squashfs of a sparse 2 GiB file is %d bytes", fi.Size())
			}
			if got := listing(t, img)["/big"]; !strings.HasSuffix(got, " 2147483648") {
				t.Errorf("/big in the image: %q, want 2147483648 bytes", got)
			}
		})
	}
}

// One file above the bound is refused before a byte of it is read.
func TestTarEntryTooLarge(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 17 << 30})
	tw.Flush() // the header only: the archive claims 17 GiB it does not hold
	_, _, err := unpack(context.Background(), &buf, filepath.Join(t.TempDir(), "root"))
	if err == nil || !strings.Contains(err.Error(), `tar entry "huge": 18253611008 bytes is larger than a rootfs file may be`) {
		t.Errorf("unpack = %v", err)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// FuzzFlatten unpacks arbitrary archives next to a host directory and
// checks that nothing outside the unpack root changed, and that every
// pseudo definition is one well-formed line.
func FuzzFlatten(f *testing.F) {
	for _, target := range []string{"../outside", "../../outside"} {
		for _, entries := range escapeForms(target) {
			f.Add(tarBytes(entries))
		}
	}
	f.Add(tarBytes([]tarEntry{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "a/b/c", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "c"},
		{hdr: tar.Header{Name: "a/l", Typeflag: tar.TypeLink, Linkname: "a/b/c"}},
		{hdr: tar.Header{Name: "a/s", Typeflag: tar.TypeSymlink, Linkname: "../outside"}},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "../outside"}},
	}))
	// A hard link to a symlink that points out links the symlink itself.
	f.Add(tarBytes([]tarEntry{
		{hdr: tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "../../outside/secret"}},
		{hdr: tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "s"}},
	}))
	// A mutated header can claim a sparse file of gigabytes of zeros.
	defer func(old int64) { maxEntrySize = old }(maxEntrySize)
	maxEntrySize = 64 << 10 // small: a fuzz input is not a big file
	f.Fuzz(func(t *testing.T, data []byte) {
		checkContained(t, func(root string) ([]string, error) {
			pseudo, _, err := unpack(context.Background(), bytes.NewReader(data), root)
			return pseudo, err
		})
	})
}

// checkContained runs an unpack into a root beside a host directory and
// checks that nothing outside the root changed, and that every pseudo
// definition it returned is one well-formed line (the fuzz targets' check).
func checkContained(t *testing.T, unpackInto func(root string) ([]string, error)) {
	t.Helper()
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	makeOutside(t, outside)
	root := filepath.Join(base, "u", "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, base, root)
	pseudo, err := unpackInto(root)
	if d := diffSnapshots(before, snapshot(t, base, root)); d != "" {
		t.Fatalf("unpack (err %v) changed the host outside its root:\n%s", err, d)
	}
	if err != nil {
		return
	}
	for _, l := range pseudo {
		if strings.ContainsAny(l, "\n\r") || !strings.HasPrefix(l, "/") {
			t.Fatalf("pseudo definition %q is not one line naming an absolute path", l)
		}
	}
}
