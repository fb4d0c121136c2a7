package imagebuild

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// An output inside the rootfs is refused however either path is spelled:
// relative or absolute, through a symlink to the output's directory or to
// the rootfs, and a rootfs of / holds every output. Otherwise the next
// build packs the previous image.
func TestCheckOutputInsideRootfsAnySpelling(t *testing.T) {
	base := t.TempDir()
	rootfs := filepath.Join(base, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "out"), 0o755)
	os.Symlink(filepath.Join(rootfs, "out"), filepath.Join(base, "outlink"))
	os.Symlink(rootfs, filepath.Join(base, "rootlink"))
	os.Mkdir(filepath.Join(base, "elsewhere"), 0o755)
	t.Chdir(base)
	cases := []struct {
		name, out, rootfs string
		inside            bool
	}{
		{"both absolute", filepath.Join(rootfs, "x.img"), rootfs, true},
		{"relative output, absolute rootfs", "rootfs/x.img", rootfs, true},
		{"absolute output, relative rootfs", filepath.Join(rootfs, "x.img"), "rootfs", true},
		{"dot-dot output", "elsewhere/../rootfs/out/x.img", rootfs, true},
		{"output directory through a symlink", "outlink/x.img", rootfs, true},
		{"absolute output directory through a symlink", filepath.Join(base, "outlink", "x.img"), "rootfs", true},
		{"rootfs through a symlink", "rootfs/out/x.img", "rootlink", true},
		{"rootfs /", "elsewhere/x.img", "/", true},
		{"beside the rootfs", "elsewhere/x.img", rootfs, false},
		{"a name that only starts like the rootfs", "rootfs.img", "rootfs", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := CheckOutput(c.out, []Input{{What: "rootfs", Path: c.rootfs}})
			switch {
			case c.inside && (err == nil || !strings.Contains(err.Error(), "is inside the rootfs directory")):
				t.Errorf("CheckOutput(%q, rootfs %q) = %v, want \"is inside the rootfs directory\"", c.out, c.rootfs, err)
			case !c.inside && err != nil:
				t.Errorf("CheckOutput(%q, rootfs %q) = %v, want no error", c.out, c.rootfs, err)
			}
		})
	}
}

// ovroot run and the tests read images through ListPartitions: a wrong
// file is named in our words, not go-diskfs's ("could not get file size
// for device zero.img").
func TestListPartitionsNotAnImage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "zero.img")
	os.WriteFile(empty, nil, 0o644)
	small := filepath.Join(dir, "small.img")
	os.WriteFile(small, make([]byte, 4096), 0o644)
	junk := filepath.Join(dir, "junk.img")
	os.WriteFile(junk, make([]byte, 1<<20), 0o644)
	for _, c := range []struct{ path, want string }{
		{empty, "zero.img is empty, not a disk image"},
		{small, "small.img is 4096 bytes: too small to hold a GPT"},
		{junk, "junk.img is not an ovroot disk image: no GPT partition table"},
		{filepath.Join(dir, "missing.img"), "missing.img: no such file or directory"},
		{dir, "is a directory, not a disk image"},
	} {
		_, err := ListPartitions(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "could not") {
			t.Errorf("ListPartitions(%s) = %v, want %q", filepath.Base(c.path), err, c.want)
		}
	}
}

// An init the device cannot start is said at build time: an ELF for
// another machine (an x86 busybox in an arm64 rootfs), a missing ELF
// interpreter, a script whose #! interpreter is either; for a directory
// rootfs and a tarball alike, symlinks followed inside the rootfs.
func TestInitWarnings(t *testing.T) {
	host, err := os.ReadFile("/bin/true") // x86_64, dynamic: PT_INTERP /lib64/ld-linux-x86-64.so.2
	if err != nil {
		t.Skip("no /bin/true")
	}
	interp, err := os.ReadFile("/lib64/ld-linux-x86-64.so.2")
	if err != nil || runtime.GOARCH != "amd64" {
		t.Skip("not an x86_64 host with /lib64/ld-linux-x86-64.so.2")
	}
	type file struct {
		name, link string
		data       []byte
	}
	tree := func(files ...file) []file { return files }
	busyboxInit := tree(file{name: "bin/busybox", data: host}, file{name: "sbin/init", link: "/bin/busybox"})
	// A static binary with its section headers past the first 64 KiB the
	// check reads (Debian's busybox-static).
	static, err := os.ReadFile("/bin/busybox")
	if err != nil || len(static) < 128<<10 {
		t.Skip("no busybox-static at /bin/busybox (make deps)")
	}
	cases := []struct {
		name  string
		arch  layout.Arch
		files []file
		want  []string // substrings, one per warning; none = no warning
	}{
		{"x86 busybox in an arm64 rootfs", layout.ARM64, busyboxInit, []string{"/sbin/init in rootfs", "is a program for x86_64 (ELFCLASS64), not for arm64"}},
		{"missing interpreter", layout.X86_64, busyboxInit, []string{"has no /lib64/ld-linux-x86-64.so.2 (the ELF interpreter of /sbin/init)"}},
		{"all there", layout.X86_64, append(busyboxInit, file{name: "lib64/ld-linux-x86-64.so.2", data: interp}), nil},
		{"script with an x86 shell in arm64", layout.ARM64, tree(file{name: "bin/sh", data: host}, file{name: "sbin/init", data: []byte("#!/bin/sh\nexec /bin/sh\n")}), []string{"/bin/sh in rootfs", "(the interpreter of /sbin/init) is a program for x86_64"}},
		{"static x86 busybox in an arm64 rootfs", layout.ARM64, tree(file{name: "bin/busybox", data: static}, file{name: "sbin/init", link: "../bin/busybox"}), []string{"is a program for x86_64 (ELFCLASS64), not for arm64"}},
		{"static x86 busybox in an x86_64 rootfs", layout.X86_64, tree(file{name: "bin/busybox", data: static}, file{name: "sbin/init", link: "../bin/busybox"}), nil},
		{"no init", layout.ARM64, tree(file{name: "bin/sh", data: []byte("x")}), []string{"has no /sbin/init ([init] init)"}},
	}
	for _, c := range cases {
		for _, kind := range []string{"dir", "tar"} {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				dir := t.TempDir()
				root := filepath.Join(dir, "root")
				var entries []tarEntry
				for _, f := range c.files {
					p := filepath.Join(root, f.name)
					os.MkdirAll(filepath.Dir(p), 0o755)
					if f.link != "" {
						os.Symlink(f.link, p)
						entries = append(entries, tarEntry{hdr: tar.Header{Name: f.name, Typeflag: tar.TypeSymlink, Linkname: f.link, Mode: 0o777}})
						continue
					}
					os.WriteFile(p, f.data, 0o755)
					entries = append(entries, tarEntry{hdr: tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(f.data))}, body: string(f.data)})
				}
				rootfs := root
				if kind == "tar" {
					rootfs = filepath.Join(dir, "root.tar")
					os.WriteFile(rootfs, tarBytes(entries), 0o644)
				}
				got, err := initWarnings(context.Background(), rootfs, "/sbin/init", c.arch)
				if err != nil {
					t.Fatal(err)
				}
				all := strings.Join(got, "\n")
				if len(c.want) == 0 && len(got) != 0 {
					t.Errorf("initWarnings = %q, want none", got)
				}
				for _, w := range c.want {
					if !strings.Contains(all, w) {
						t.Errorf("initWarnings = %q, want one saying %q", got, w)
					}
				}
			})
		}
	}
}
