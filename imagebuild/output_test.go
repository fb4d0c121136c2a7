package imagebuild

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
)

// An output that is an input, a directory, a device-like file or a path
// inside the rootfs is refused before anything is written, and left as it
// was.
func TestBuildOutputRefused(t *testing.T) {
	needTools(t, "mksquashfs")
	kernel, initrd := fakeBootFiles(t)
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "init"), []byte("init"), 0o755)
	tarball := writeTar(t, []tarEntry{{hdr: tarHeader("sbin/init"), body: "init"}}, true)
	dir := t.TempDir()
	emptyDir := filepath.Join(dir, "empty")
	os.Mkdir(emptyDir, 0o755)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link-to-kernel")
	os.Symlink(kernel, link)
	spec := func(rootfs string) Spec {
		return Spec{Arch: layout.X86_64, Kernel: kernel, Initramfs: initrd, Cmdline: "console=ttyS0",
			Rootfs: rootfs, Compression: "gzip", BootSize: 40 << 20, DataSize: 20 << 20}
	}
	for _, c := range []struct {
		name, out, rootfs, want string
	}{
		{"kernel", kernel, root, "is the kernel given as input"},
		{"initramfs", initrd, root, "is the initramfs given as input"},
		{"rootfs tarball", tarball, tarball, "is the rootfs given as input"},
		{"inside the rootfs directory", filepath.Join(root, "disk.img"), root, "is inside the rootfs directory"},
		{"empty directory", emptyDir, root, "is a directory"},
		{"fifo", fifo, root, "is a fifo, not a regular file"},
		{"symlink to the kernel", link, root, "is the kernel given as input"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t, filepath.Dir(c.out), "")
			for _, p := range []string{kernel, initrd, tarball, root} {
				for k, v := range snapshot(t, p, "") {
					before[k] = v
				}
			}
			_, err := Build(context.Background(), spec(c.rootfs), c.out)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Build -o %s: %v, want an error saying %q", c.out, err, c.want)
			}
			after := snapshot(t, filepath.Dir(c.out), "")
			for _, p := range []string{kernel, initrd, tarball, root} {
				for k, v := range snapshot(t, p, "") {
					after[k] = v
				}
			}
			if d := diffSnapshots(before, after); d != "" {
				t.Errorf("a refused build changed files:\n%s", d)
			}
		})
	}
}

func tarHeader(name string) tar.Header {
	return tar.Header{Name: name, Typeflag: '0', Mode: 0o755}
}

// A build that fails while the image is being written leaves the previous
// image at -o untouched and no partial file beside it.
func TestBuildFailureKeepsOutput(t *testing.T) {
	spec, out := previousImage(t)
	dir := filepath.Dir(out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancelled once the squashfs is made: the write fails half-way.
	spec.Log = func(format string, args ...any) {
		if strings.HasPrefix(format, "squashfs:") {
			cancel()
		}
	}
	_, err := Build(ctx, spec, out)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Build = %v, want context.Canceled", err)
	}
	checkPreviousImage(t, out)
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 1 {
		t.Errorf("files beside -o after a failed build: %v", names)
	}
	// The same build, not cancelled, replaces it.
	spec.Log = nil
	if _, err := Build(context.Background(), spec, out); err != nil {
		t.Fatal(err)
	}
	if _, err := ListPartitions(out); err != nil {
		t.Errorf("-o after a good build: %v", err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, ".*")); len(names) != 0 {
		t.Errorf("partial files beside -o after a good build: %v", names)
	}
}

// BuildImage refuses an output that is its image.toml, before building.
func TestBuildImageOutputIsSpec(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "image.toml")
	text := "arch = \"x86_64\"\nkernel = \"vmlinuz\"\nmodules_dir = \"modules\"\nrootfs = \"rootfs\"\n"
	os.WriteFile(spec, []byte(text), 0o644)
	im, err := config.LoadImage(spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = BuildImage(context.Background(), im, spec, Options{})
	if err == nil || !strings.Contains(err.Error(), "is the image spec given as input") {
		t.Errorf("BuildImage -o image.toml: %v", err)
	}
	if data, _ := os.ReadFile(spec); string(data) != text {
		t.Error("image.toml changed")
	}
}

// A write error (here the file size limit, as a full disk would) leaves the
// previous image at -o and no partial file.
func TestBuildWriteErrorKeepsOutput(t *testing.T) {
	spec, out := previousImage(t)
	// The Go runtime ignores SIGXFSZ: writes past the limit fail with EFBIG.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	limit := old
	limit.Cur = 30 << 20 // the image is 63 MiB
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	_, err := Build(context.Background(), spec, out)
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if !errors.Is(err, syscall.EFBIG) {
		t.Errorf("Build = %v, want EFBIG", err)
	}
	checkPreviousImage(t, out)
}

// previousImage is a small image spec (fake boot files, a one-file rootfs)
// and an -o that already holds a previous image.
func previousImage(t *testing.T) (Spec, string) {
	t.Helper()
	needTools(t, "mksquashfs")
	kernel, initrd := fakeBootFiles(t)
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "init"), []byte("init"), 0o755)
	out := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(out, []byte("the previous image\n"), 0o644)
	return Spec{Arch: layout.X86_64, Kernel: kernel, Initramfs: initrd, Cmdline: "console=ttyS0",
		Rootfs: root, Compression: "gzip", BootSize: 40 << 20, DataSize: 20 << 20}, out
}

// checkPreviousImage: after a failed build, -o still holds the previous
// image and no partial file is left beside it.
func checkPreviousImage(t *testing.T, out string) {
	t.Helper()
	if data, _ := os.ReadFile(out); string(data) != "the previous image\n" {
		t.Errorf("-o after a failed build holds %d bytes, want the previous image", len(data))
	}
	if names, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*")); len(names) != 0 {
		t.Errorf("partial files beside -o after a failed build: %v", names)
	}
}
