package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, tool+" not installed (make deps)")
		}
	}
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

func writeTar(t *testing.T, entries []tarEntry, compress bool) string {
	t.Helper()
	data := tarBytes(entries)
	if compress {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		gz.Write(data)
		if err := gz.Close(); err != nil {
			t.Fatal(err)
		}
		data = buf.Bytes()
	}
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// listing is `unsquashfs -lln`: "perm uid/gid size-or-dev date time path[ -> target]".
func listing(t *testing.T, img string) map[string]string {
	t.Helper()
	out, err := exec.Command("unsquashfs", "-lln", "-d", "", img).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && strings.HasPrefix(f[0], "d") {
			f = append(f, "") // the root: its path is empty with -d ""
		}
		if len(f) < 6 {
			continue
		}
		// perm, owner, then the path from field 5 on (may hold spaces).
		path := strings.Join(f[5:], " ")
		size := f[2]
		if strings.HasPrefix(f[0], "c") || strings.HasPrefix(f[0], "b") {
			size = strings.ReplaceAll(f[2]+f[3], " ", "")
			path = strings.Join(f[6:], " ")
		}
		m[path] = f[0] + " " + f[1] + " " + size
	}
	return m
}

func catFile(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("unsquashfs", "-cat", img, path).Output()
	if err != nil {
		t.Fatalf("unsquashfs -cat %s: %v", path, err)
	}
	return string(out)
}

// A tarball's owners, modes, devices, links and odd names all reach the
// image although the unpack runs without root.
func TestTarballToSquashfs(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	dir := func(name string, mode int64, uid int) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, Uid: uid, Gid: uid}}
	}
	file := func(name string, mode int64, uid int, body string) tarEntry {
		return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Uid: uid, Gid: uid}, body: body}
	}
	entries := []tarEntry{
		dir("./", 0o755, 0),
		dir("./etc/", 0o755, 0),
		file("./etc/passwd", 0o644, 0, "root:x:0:0::/root:/bin/sh\n"),
		file("./etc/shadow", 0o600, 0, "secret\n"),
		file("./etc/shadow", 0o640, 0, "last one wins\n"),
		dir("./home/user/", 0o700, 1000),
		file("./home/user/my notes.txt", 0o644, 1000, "spaces in the name\n"),
		file("./home/user/back\\slash", 0o644, 1000, "backslash\n"),
		file("./bin/su", 0o4755, 0, "setuid\n"),
		{hdr: tar.Header{Name: "./bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}},
		{hdr: tar.Header{Name: "./bin/su-again", Typeflag: tar.TypeLink, Linkname: "./bin/su"}},
		{hdr: tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "./dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Gid: 6, Devmajor: 8, Devminor: 0}},
		{hdr: tar.Header{Name: "./run/fifo", Typeflag: tar.TypeFifo, Mode: 0o620}},
		// No directory entries for deep/a/b: they are implied, root-owned 0755.
		file("deep/a/b/c.txt", 0o444, 0, "implied parents\n"),
	}
	// Compression is recognized by its magic, not the name (always rootfs.tar).
	for _, kind := range []string{"plain", "gzip", "xz", "zstd", "bzip2"} {
		t.Run(kind, func(t *testing.T) {
			tarball := compressFile(t, writeTar(t, entries, false), kind)
			img := filepath.Join(t.TempDir(), "root.sqfs")
			n, err := MakeSquashfs(context.Background(), tarball, img, "gzip")
			if err != nil {
				t.Fatal(err)
			}
			got := listing(t, img)
			want := map[string]string{
				"":                        "drwxr-xr-x 0/0",
				"/etc/passwd":             "-rw-r--r-- 0/0 26",
				"/etc/shadow":             "-rw-r----- 0/0 14",
				"/home/user":              "drwx------ 1000/1000",
				"/home/user/my notes.txt": "-rw-r--r-- 1000/1000 19",
				"/home/user/back\\slash":  "-rw-r--r-- 1000/1000 10",
				"/bin/su":                 "-rwsr-xr-x 0/0 7",
				"/bin/su-again":           "-rwsr-xr-x 0/0 7",
				"/bin/sh -> busybox":      "lrwxrwxrwx 0/0 7",
				"/dev/null":               "crw-rw-rw- 0/0 1,3",
				"/dev/sda":                "brw-rw---- 0/6 8,0",
				"/run/fifo":               "prw--w---- 0/0 0",
				"/deep":                   "drwxr-xr-x 0/0",
				"/deep/a/b":               "drwxr-xr-x 0/0",
				"/deep/a/b/c.txt":         "-r--r--r-- 0/0 16",
				"/rom":                    "drwxr-xr-x 0/0",
				"/overlay":                "drwxr-xr-x 0/0",
				"/proc":                   "drwxr-xr-x 0/0",
				"/sys":                    "drwxr-xr-x 0/0",
				"/dev":                    "drwxr-xr-x 0/0",
				"/run":                    "drwxr-xr-x 0/0",
			}
			for p, w := range want {
				g, ok := got[p]
				if !ok {
					t.Errorf("%s missing from the image; listing: %v", p, got)
					continue
				}
				if !strings.HasPrefix(g, w) {
					t.Errorf("%s = %q, want %q", p, g, w)
				}
			}
			if len(got) != n {
				t.Errorf("MakeSquashfs counted %d entries, the image has %d", n, len(got))
			}
			if c := catFile(t, img, "etc/shadow"); c != "last one wins\n" {
				t.Errorf("etc/shadow = %q", c)
			}
			if c := catFile(t, img, "home/user/my notes.txt"); c != "spaces in the name\n" {
				t.Errorf("my notes.txt = %q", c)
			}
			// The same tarball gives the same image, a second later too.
			time.Sleep(1100 * time.Millisecond)
			img2 := filepath.Join(t.TempDir(), "root.sqfs")
			if _, err := MakeSquashfs(context.Background(), tarball, img2, "gzip"); err != nil {
				t.Fatal(err)
			}
			if sum(t, img) != sum(t, img2) {
				t.Error("two images of the same tarball differ")
			}
		})
	}
}

func TestBadTarballs(t *testing.T) {
	needTools(t, "mksquashfs")
	cases := map[string]struct {
		entries []tarEntry
		raw     string
		want    string
	}{
		"climbs out": {entries: []tarEntry{{hdr: tar.Header{Name: "../etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, body: "x"}},
			want: `"../etc/passwd" climbs out of the root`},
		"dangling hard link": {entries: []tarEntry{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeLink, Linkname: "b"}}},
			want: `hard link to "b", which is not earlier`},
		"not a tar": {raw: strings.Repeat("this is not a tarball\n", 40), want: "not a valid tar archive (at the start)"},
		"empty":     {raw: string(make([]byte, 1024)), want: "empty tar archive"},
		"truncated": {raw: "trunc", want: "not a valid tar archive"},
		"bad gzip":  {raw: "\x1f\x8bnot gzip at all", want: "gzip"},
		"newline in a name": {entries: []tarEntry{{hdr: tar.Header{Name: "etc/bad\nname", Typeflag: tar.TypeReg, Mode: 0o644}, body: "x"}},
			want: `"etc/bad\nname": a newline in a file name cannot be stored`},
		"below a file": {entries: []tarEntry{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, body: "x"},
			{hdr: tar.Header{Name: "b/c", Typeflag: tar.TypeReg, Mode: 0o644}, body: "x"},
			{hdr: tar.Header{Name: "b", Typeflag: tar.TypeReg, Mode: 0o644}, body: "x"}},
			want: `"b/c" lies below "b", which the archive makes not a directory`},
		"root as a file": {entries: []tarEntry{{hdr: tar.Header{Name: ".", Typeflag: tar.TypeReg, Mode: 0o644}, body: "x"}},
			want: `tar entry "." names the root, which must be a directory`},
		"root as a symlink": {entries: []tarEntry{{hdr: tar.Header{Name: "/", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}},
			want: `names the root, which must be a directory`},
		"hard link to a directory": {entries: []tarEntry{{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}},
			{hdr: tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "d"}}},
			want: `hard link to directory "d"`},
		"socket/odd": {entries: []tarEntry{{hdr: tar.Header{Name: "x", Typeflag: 'Z', Mode: 0o644}}}, want: `unsupported type "Z"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var tarball string
			if c.raw != "" {
				tarball = filepath.Join(t.TempDir(), "bad.tar")
				os.WriteFile(tarball, []byte(c.raw), 0o644)
			} else {
				tarball = writeTar(t, c.entries, false)
			}
			_, err := MakeSquashfs(context.Background(), tarball, filepath.Join(t.TempDir(), "x.sqfs"), "gzip")
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), tarball) {
				t.Errorf("error %v, want one naming %s and saying %q", err, tarball, c.want)
			}
		})
	}
}

// A tree well past the size where go-diskfs's writer lost entries is
// complete in the image (the QEMU test proves the kernel reads it all).
func TestLargeTreeComplete(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	root := t.TempDir()
	for d := 0; d < 60; d++ {
		for f := 0; f < 100; f++ {
			p := filepath.Join(root, fmt.Sprintf("d%02d", d), fmt.Sprintf("f%03d", f))
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(p), 0o644)
		}
	}
	img := filepath.Join(t.TempDir(), "big.sqfs")
	n, err := MakeSquashfs(context.Background(), root, img, "gzip")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1+60+6000+6 {
		t.Errorf("counted %d entries, want %d (the tree and the six mount points)", n, 1+60+6000+6)
	}
	if got := len(listing(t, img)); got != n {
		t.Errorf("image lists %d entries, tree has %d", got, n)
	}
}

func fakeBootFiles(t *testing.T) (kernel, initrd string) {
	dir := t.TempDir()
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	os.WriteFile(kernel, bytes.Repeat([]byte("K"), 3<<20), 0o644)
	os.WriteFile(initrd, bytes.Repeat([]byte("I"), 1<<20), 0o644)
	return
}

func TestBuildImage(t *testing.T) {
	needTools(t, "mksquashfs")
	kernel, initrd := fakeBootFiles(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "sbin/init"), []byte("init"), 0o755)
	spec := Spec{Arch: layout.ARM64, Kernel: kernel, Initramfs: initrd, Cmdline: "console=ttyAMA0 quiet",
		Rootfs: root, Compression: "gzip", BootSize: 40 << 20, DataSize: 20 << 20, KernelRelease: "6.1.0-test"}
	out := filepath.Join(t.TempDir(), "disk.img")
	res, err := Build(context.Background(), spec, out)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := ListPartitions(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		label, typ string
		size       int64
	}{
		{layout.BootLabel, layout.ESPTypeGUID, 40 << 20},
		{layout.RootLabel, layout.ARM64.RootTypeGUID(), 1 << 20},
		{layout.DataLabel, layout.LinuxDataTypeGUID, 20 << 20},
	}
	if len(parts) != len(want) {
		t.Fatalf("partitions %+v", parts)
	}
	for i, w := range want {
		p := parts[i]
		if p.Label != w.label || !strings.EqualFold(p.TypeGUID, w.typ) || p.Size != w.size || p.Start%(1<<20) != 0 {
			t.Errorf("partition %d = %+v, want %s type %s size %d, 1MiB-aligned", i+1, p, w.label, w.typ, w.size)
		}
	}
	if res.Entries != 9 { // /, /sbin, /sbin/init, and the six mount points
		t.Errorf("entries = %d", res.Entries)
	}
	// The squashfs sits at the root partition's start; the data partition is blank.
	f, _ := os.Open(out)
	defer f.Close()
	magic := make([]byte, 4)
	f.ReadAt(magic, parts[1].Start)
	if string(magic) != "hsqs" {
		t.Errorf("root partition starts with %q, want squashfs magic hsqs", magic)
	}
	data := make([]byte, 1<<20)
	f.ReadAt(data, parts[2].Start)
	if !bytes.Equal(data, make([]byte, len(data))) {
		t.Error("data partition is not blank")
	}

	info, k, i, err := ReadBoot(out, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if info.Arch != layout.ARM64 || info.Cmdline != spec.Cmdline || info.KernelRelease != "6.1.0-test" {
		t.Errorf("boot info %+v", info)
	}
	for _, pair := range [][2]string{{k, kernel}, {i, initrd}} {
		a, _ := os.ReadFile(pair[0])
		b, _ := os.ReadFile(pair[1])
		if !bytes.Equal(a, b) {
			t.Errorf("%s read back from the boot partition differs from %s", pair[0], pair[1])
		}
	}

	// The FAT volume label's times are the FAT epoch, not the clock
	// go-diskfs stamps (the two builds below may fall in one 2-second
	// FAT time unit: this does not depend on when it runs).
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	fat := img[parts[0].Start : parts[0].Start+16<<20]
	label := []byte(fmt.Sprintf("%-11s", bootVolumeLabel))
	found := false
	for off := 0; off+32 <= len(fat); off += 32 {
		if e := fat[off : off+32]; e[11] == 0x08 && bytes.Equal(e[:11], label) {
			found = true
			if got, want := e[13:26], []byte{0, 0, 0, 0x21, 0, 0x21, 0, 0, 0, 0, 0, 0x21, 0}; !bytes.Equal(got, want) {
				t.Errorf("FAT volume label times % x, want % x (1980-01-01 00:00)", got, want)
			}
		}
	}
	if !found {
		t.Error("no FAT volume label entry in the boot partition")
	}

	// Reproducible: the same inputs give the same bytes, a second later too
	// (the /rom and /overlay directories mksquashfs adds must not take the
	// build's clock).
	time.Sleep(1100 * time.Millisecond)
	out2 := filepath.Join(t.TempDir(), "disk.img")
	if _, err := Build(context.Background(), spec, out2); err != nil {
		t.Fatal(err)
	}
	if sum(t, out) != sum(t, out2) {
		t.Error("two builds from the same inputs differ")
	}
}

func sum(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestBuildErrors(t *testing.T) {
	kernel, initrd := fakeBootFiles(t)
	out := filepath.Join(t.TempDir(), "disk.img")
	for _, c := range []struct {
		spec Spec
		want string
	}{
		{Spec{Arch: "sparc"}, "unknown arch"},
		{Spec{Arch: layout.X86_64, Kernel: "/nonexistent/vmlinuz", Initramfs: initrd}, "kernel: "},
		{Spec{Arch: layout.X86_64, Kernel: kernel, Initramfs: t.TempDir()}, "is not a regular file"},
		{Spec{Arch: layout.X86_64, Kernel: kernel, Initramfs: initrd, Rootfs: "/nonexistent/root"}, "rootfs: "},
	} {
		if _, err := Build(context.Background(), c.spec, out); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.spec, err, c.want)
		}
	}
}
