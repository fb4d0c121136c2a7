package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
)

// fakeBzImage is the part of an x86 bzImage ReadKernel reads: the setup
// header with "HdrS", protocol 2.15 and kernel_version pointing at a
// version string.
func fakeBzImage(version string) []byte {
	b := make([]byte, 0x4000)
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x020f)
	binary.LittleEndian.PutUint16(b[0x20e:], 0x3000-0x200)
	copy(b[0x3000:], version+" (someone@example) #1 SMP\x00")
	return b
}

// fakeArm64Image is an arm64 Image header with the kernel's banner later on.
func fakeArm64Image(release string) []byte {
	b := make([]byte, 0x30000)
	copy(b[0x38:], "ARM\x64")
	copy(b[0x2fff0-len(release):], "Linux version "+release+" (x@y) #1\x00")
	return b
}

// fakeZboot is the start of an EFI zboot image: "MZ", "zimg", and the PE
// header (at the offset 0x3c names) with its machine.
func fakeZboot(machine uint16) []byte {
	b := make([]byte, 0x200)
	copy(b, "MZ")
	copy(b[4:], "zimg")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x84:], machine)
	return b
}

// fakeZImage is a 32-bit ARM zImage as booting.rst describes it: the
// magic 0x016F2818 at 0x24 (little-endian), start and end addresses, the
// endianness flag at 0x30, and a payload (piggy.S) after the decompressor.
// efiStub starts it with "MZ", as an armmp zImage with the EFI stub does.
func fakeZImage(endian uint32, efiStub bool, payload []byte) []byte {
	b := make([]byte, 0x8000)
	if efiStub {
		copy(b, "MZ")
	}
	binary.LittleEndian.PutUint32(b[0x24:], 0x016F2818)
	binary.LittleEndian.PutUint32(b[0x2c:], uint32(len(b)+len(payload)))
	binary.LittleEndian.PutUint32(b[0x30:], endian)
	return append(b, payload...)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestReadKernel(t *testing.T) {
	cases := []struct {
		name    string
		data    []byte
		arch    layout.Arch
		release string
		err     string
	}{
		{"bzImage", fakeBzImage("6.1.0-56-amd64"), layout.X86_64, "6.1.0-56-amd64", ""},
		{"arm64 Image", fakeArm64Image("6.1.0-56-arm64"), layout.ARM64, "6.1.0-56-arm64", ""},
		{"gzip arm64 Image", gz(fakeArm64Image("6.1.0-56-arm64")), layout.ARM64, "6.1.0-56-arm64", ""},
		{"empty", nil, "", "", "is empty"},
		{"text", []byte(strings.Repeat("#!/bin/sh\necho not a kernel\n", 100)), "", "", "is not a Linux kernel image"},
		{"arm64 EFI zboot", fakeZboot(0xaa64), layout.ARM64, "", ""},
		{"x86_64 EFI zboot", fakeZboot(0x8664), layout.X86_64, "", ""},
		{"riscv EFI zboot", fakeZboot(0x5064), "", "", "EFI zboot image for an architecture ovroot does not build"},
		{"gzip of something else", gz([]byte(strings.Repeat("x", 4096))), "", "", "holds no arm64 Image"},
		{"vmlinux", append([]byte("\x7fELF"), make([]byte, 4096)...), "", "", "is an ELF file (vmlinux?)"},
		{"ARM zImage", fakeZImage(0x04030201, false, nil), layout.ARM, "", ""},
		{"ARM zImage with the EFI stub", fakeZImage(0x04030201, true, nil), layout.ARM, "", ""},
		{"ARM zImage of an old kernel without the endianness flag", fakeZImage(0, false, nil), layout.ARM, "", ""},
		{"ARM zImage, gzip payload", fakeZImage(0x04030201, true, gz(fakeArm64Image("6.1.0-50-armmp")[0x100:])), layout.ARM, "6.1.0-50-armmp", ""},
		{"big-endian ARM zImage", fakeZImage(0x01020304, false, nil), "", "", "big-endian ARM zImage"},
		{"zImage magic byte-swapped", func() []byte {
			b := fakeZImage(0x04030201, false, nil)
			binary.BigEndian.PutUint32(b[0x24:], 0x016F2818)
			return b
		}(), "", "", "no ARM zImage magic 0x016F2818 at 0x24"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ki, err := ReadKernel(bytes.NewReader(c.data), int64(len(c.data)))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("ReadKernel = %+v, %v; want an error saying %q", ki, err, c.err)
				}
				return
			}
			if err != nil || ki.Arch != c.arch || ki.Release != c.release {
				t.Errorf("ReadKernel = %+v, %v; want arch %s release %s", ki, err, c.arch, c.release)
			}
		})
	}
}

// The real kernels of the cache: identified, and each refused for every
// other arch, naming both and the kernel that arch wants.
func TestCheckKernelReal(t *testing.T) {
	cache := testenv.KernelCache()
	wantFor := map[layout.Arch]string{layout.X86_64: "bzImage", layout.ARM64: "arm64 Image", layout.ARM: "32-bit ARM zImage"}
	for _, c := range []struct {
		dir    string
		arch   layout.Arch
		format string
		// release: the kernel says its release (Debian's armmp zImage
		// in its xz payload, with the ARM BCJ filter).
		release bool
	}{
		{"amd64", layout.X86_64, "bzImage", true},
		{"arm64", layout.ARM64, "Image", true},
		{"armhf", layout.ARM, "zImage", true},
	} {
		k := filepath.Join(cache, c.dir, "vmlinuz")
		if _, err := os.Stat(k); err != nil {
			testenv.Missing(t, "no kernel in the cache (make kernels): "+err.Error())
		}
		ki, err := CheckKernel(k, c.arch)
		if err != nil || ki.Format != c.format {
			t.Errorf("CheckKernel(%s, %s) = %+v, %v; want a %s", k, c.arch, ki, err, c.format)
		}
		want, _ := os.ReadFile(filepath.Join(cache, c.dir, "release"))
		if c.release && ki != nil && ki.Release != strings.TrimSpace(string(want)) {
			t.Errorf("%s: release %q, the cache says %q", k, ki.Release, want)
		}
		for _, other := range layout.Arches {
			if other == c.arch {
				continue
			}
			_, err = CheckKernel(k, other)
			if err == nil || !strings.Contains(err.Error(), "is an "+string(c.arch)+" "+c.format) ||
				!strings.Contains(err.Error(), "not a kernel for "+string(other)) || !strings.Contains(err.Error(), wantFor[other]) {
				t.Errorf("CheckKernel(%s, %s) = %v, want an error naming both arches and the %s %s wants", k, other, err, wantFor[other], other)
			}
		}
	}
}

func TestCheckStaticELF(t *testing.T) {
	cache := testenv.KernelCache()
	static := filepath.Join(cache, "amd64", "e2fsck")
	staticArm := filepath.Join(cache, "arm64", "e2fsck")
	staticArm32 := filepath.Join(cache, "armhf", "e2fsck")
	for _, p := range []string{static, staticArm, staticArm32, "/bin/sh"} {
		if _, err := os.Stat(p); err != nil {
			testenv.Missing(t, "missing "+p+" (make kernels)")
		}
	}
	text := filepath.Join(t.TempDir(), "script")
	os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755)
	for _, c := range []struct {
		path string
		arch layout.Arch
		err  string
	}{
		{static, layout.X86_64, ""},
		{staticArm, layout.ARM64, ""},
		{staticArm, layout.X86_64, "is an executable for arm64 (ELFCLASS64), not for x86_64"},
		{static, layout.ARM64, "is an executable for x86_64 (ELFCLASS64), not for arm64"},
		{staticArm32, layout.ARM, ""},
		{staticArm32, layout.X86_64, "is an executable for arm (ELFCLASS32), not for x86_64"},
		{staticArm32, layout.ARM64, "is an executable for arm (ELFCLASS32), not for arm64"},
		{staticArm, layout.ARM, "is an executable for arm64 (ELFCLASS64), not for arm"},
		{static, layout.ARM, "is an executable for x86_64 (ELFCLASS64), not for arm"},
		{"/bin/sh", layout.X86_64, "is dynamically linked (interpreter /lib"},
		{text, layout.X86_64, "is not an ELF executable"},
	} {
		err := checkStaticFile("e2fsck", c.path, c.arch)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), c.path)) {
			t.Errorf("check %s for %s: %v, want %q", c.path, c.arch, err, c.err)
		}
	}
}

func TestRootfsHas(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "usr/lib/systemd"), 0o755)
	os.WriteFile(filepath.Join(dir, "usr/lib/systemd/systemd"), nil, 0o755)
	os.Symlink("usr/sbin", filepath.Join(dir, "sbin"))
	os.MkdirAll(filepath.Join(dir, "usr/sbin"), 0o755)
	os.Symlink("/usr/lib/systemd/systemd", filepath.Join(dir, "usr/sbin/init"))
	// An absolute link is resolved in the rootfs, never on the host.
	os.Symlink("/bin", filepath.Join(dir, "hostbin"))
	tarball := writeTar(t, []tarEntry{
		{hdr: tar.Header{Name: "./usr/lib/systemd/systemd", Typeflag: tar.TypeReg, Mode: 0o755}, body: "x"},
		{hdr: tar.Header{Name: "./sbin", Typeflag: tar.TypeSymlink, Linkname: "usr/sbin"}},
		{hdr: tar.Header{Name: "./usr/sbin/init", Typeflag: tar.TypeSymlink, Linkname: "../lib/systemd/systemd"}},
		{hdr: tar.Header{Name: "./hostbin", Typeflag: tar.TypeSymlink, Linkname: "/bin"}},
	}, true)
	for _, rootfs := range []string{dir, tarball} {
		for p, want := range map[string]bool{"/sbin/init": true, "/usr/sbin/init": true, "/init": false, "/hostbin/sh": false, "/sbin/init/x": false} {
			got, err := RootfsHas(context.Background(), rootfs, p)
			if err != nil || got != want {
				t.Errorf("RootfsHas(%s, %s) = %v, %v; want %v", rootfs, p, got, err, want)
			}
		}
	}
}

// testPieces is a set of pieces that build an x86_64 image, from the
// kernel cache; each case of TestBuildImageRefusesPieces spoils one.
type testPieces struct {
	im   *config.Image
	init string
}

func goodPieces(t *testing.T) testPieces {
	t.Helper()
	needTools(t, "mksquashfs")
	cache := testenv.KernelCache()
	amd := filepath.Join(cache, "amd64")
	if _, err := os.Stat(filepath.Join(amd, "e2fsck")); err != nil {
		testenv.Missing(t, "no kernel cache (make kernels): "+err.Error())
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "sbin/init"), []byte("init"), 0o755)
	im := config.DefaultImage(layout.X86_64)
	im.Kernel = filepath.Join(amd, "vmlinuz")
	im.ModulesDir = filepath.Join(amd, "modules")
	im.E2fsck = filepath.Join(amd, "e2fsck")
	im.Rootfs = root
	im.EmergencyShell = false
	im.DataSize = 16 << 20
	im.BootSize = 40 << 20
	// The static e2fsck stands in for the init: a static x86_64 program.
	return testPieces{im: im, init: filepath.Join(amd, "e2fsck")}
}

// Pieces that cannot boot together are refused at build time, naming what
// is wrong, and no image is written.
func TestBuildImageRefusesPieces(t *testing.T) {
	cache := testenv.KernelCache()
	arm := filepath.Join(cache, "arm64")
	tmp := t.TempDir()
	empty := filepath.Join(tmp, "empty")
	os.WriteFile(empty, nil, 0o644)
	notKernel := filepath.Join(tmp, "not-a-kernel")
	os.WriteFile(notKernel, []byte(strings.Repeat("not a kernel\n", 1000)), 0o644)
	otherRelease := filepath.Join(tmp, "vmlinuz-6.1.0-99-amd64")
	os.WriteFile(otherRelease, fakeBzImage("6.1.0-99-amd64"), 0o644)
	for _, c := range []struct {
		name  string
		spoil func(p *testPieces)
		want  string
	}{
		{"empty kernel", func(p *testPieces) { p.im.Kernel = empty }, "kernel " + empty + " is empty"},
		{"not a kernel", func(p *testPieces) { p.im.Kernel = notKernel }, "is not a Linux kernel image"},
		{"arm64 kernel for x86_64", func(p *testPieces) { p.im.Kernel = filepath.Join(arm, "vmlinuz") }, "is an arm64 Image, not a kernel for x86_64"},
		{"arm64 modules", func(p *testPieces) { p.im.ModulesDir = filepath.Join(arm, "modules") }, "is built for arm64, not x86_64"},
		{"modules of another release", func(p *testPieces) { p.im.Kernel = otherRelease }, "(vermagic), but the kernel is 6.1.0-99-amd64"},
		{"dynamic init", func(p *testPieces) { p.init = "/bin/sh" }, "init binary /bin/sh is dynamically linked"},
		{"arm64 init", func(p *testPieces) { p.init = filepath.Join(arm, "e2fsck") }, "is an executable for arm64"},
		{"dynamic e2fsck", func(p *testPieces) { p.im.E2fsck = "/bin/sh" }, "e2fsck /bin/sh is dynamically linked"},
		{"arm64 e2fsck", func(p *testPieces) { p.im.E2fsck = filepath.Join(arm, "e2fsck") }, "e2fsck " + filepath.Join(arm, "e2fsck") + " is an executable for arm64"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := goodPieces(t)
			c.spoil(&p)
			out := filepath.Join(t.TempDir(), "disk.img")
			_, err := BuildImage(context.Background(), p.im, out, Options{InitBinary: p.init})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("BuildImage = %v, want an error saying %q", err, c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("an image was written")
			}
		})
	}
}

// The good pieces build; a rootfs without the init the config names builds
// too, with a warning naming it.
func TestBuildImageWarnsMissingInit(t *testing.T) {
	p := goodPieces(t)
	var log bytes.Buffer
	var mu sync.Mutex // the initramfs goroutine logs too
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		log.WriteString(strings.TrimSpace(fmt.Sprintf(format, args...)) + "\n")
	}
	if _, err := BuildImage(context.Background(), p.im, filepath.Join(t.TempDir(), "disk.img"), Options{InitBinary: p.init, Log: logf}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), "warning") {
		t.Errorf("a good build warned:\n%s", log.String())
	}
	log.Reset()
	p.im.Init.Init = "/lib/systemd/systemd"
	if _, err := BuildImage(context.Background(), p.im, filepath.Join(t.TempDir(), "disk.img"), Options{InitBinary: p.init, Log: logf}); err != nil {
		t.Fatal(err)
	}
	if want := "warning: rootfs " + p.im.Rootfs + " has no /lib/systemd/systemd ([init] init)"; !strings.Contains(log.String(), want) {
		t.Errorf("log:\n%s\nwant a line saying %q", log.String(), want)
	}

	// A tarball is checked in the tree it unpacks to, and named as given.
	log.Reset()
	tarball := filepath.Join(t.TempDir(), "rootfs.tar")
	if out, err := exec.Command("tar", "-cf", tarball, "-C", p.im.Rootfs, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	p.im.Rootfs = tarball
	if _, err := BuildImage(context.Background(), p.im, filepath.Join(t.TempDir(), "disk.img"), Options{InitBinary: p.init, Log: logf}); err != nil {
		t.Fatal(err)
	}
	if want := "warning: rootfs " + tarball + " has no /lib/systemd/systemd ([init] init)"; !strings.Contains(log.String(), want) {
		t.Errorf("log:\n%s\nwant a line saying %q", log.String(), want)
	}
	if strings.Contains(log.String(), os.TempDir()+"/ovroot-") {
		t.Errorf("a warning names the build's temporary tree:\n%s", log.String())
	}
}

// 32-bit ARM modules: the armmp ones pass for arm with the release its
// zImage says, and are refused with another release; arm64's are refused
// for arm (another machine), and armmp's for arm64.
func TestCheckModulesArm(t *testing.T) {
	cache := testenv.KernelCache()
	armhf, arm64 := filepath.Join(cache, "armhf"), filepath.Join(cache, "arm64")
	if _, err := os.Stat(filepath.Join(armhf, "modules")); err != nil {
		testenv.Missing(t, "no armhf kernel in the cache (make kernels): "+err.Error())
	}
	ki, err := CheckKernel(filepath.Join(armhf, "vmlinuz"), layout.ARM)
	if err != nil {
		t.Fatal(err)
	}
	mods := config.DefaultModules(layout.ARM)
	for _, c := range []struct {
		dir     string
		arch    layout.Arch
		release string
		want    string
	}{
		{armhf, layout.ARM, ki.Release, ""},
		{armhf, layout.ARM, "6.1.0-99-armmp", "(vermagic), but the kernel is 6.1.0-99-armmp"},
		{arm64, layout.ARM, "", "is built for arm64, not arm"},
		{armhf, layout.ARM64, "", "is built for arm, not arm64"},
	} {
		err := CheckModules(filepath.Join(c.dir, "modules"), mods, c.arch, c.release)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("CheckModules(%s, %s, %q) = %v, want %q", c.dir, c.arch, c.release, err, c.want)
		}
	}
}

// The initramfs is made while mksquashfs runs: when it fails, the build
// fails with its error (not a cancelled mksquashfs) and writes no image.
func TestBuildImageInitramfsFails(t *testing.T) {
	p := goodPieces(t)
	p.im.E2fsck = ""
	missing := filepath.Join(t.TempDir(), "gone", "e2fsck")
	find := func(context.Context, layout.Arch, func(string, ...any)) (string, error) { return missing, nil }
	out := filepath.Join(t.TempDir(), "disk.img")
	_, err := BuildImage(context.Background(), p.im, out, Options{InitBinary: p.init, FindE2fsck: find})
	if err == nil || !strings.HasPrefix(err.Error(), "initramfs: ") || !strings.Contains(err.Error(), missing) {
		t.Errorf("BuildImage = %v, want the initramfs error naming %s", err, missing)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("an image was written")
	}
}

// A second build with the same initramfs inputs takes the archive from the
// cache, byte for byte the one built; a change to any carried file, or to
// the init config, builds anew.
func TestBuildImageInitramfsCache(t *testing.T) {
	p := goodPieces(t)
	e2fsck := filepath.Join(t.TempDir(), "e2fsck")
	data, err := os.ReadFile(p.im.E2fsck)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(e2fsck, data, 0o755)
	p.im.E2fsck = e2fsck
	cache := t.TempDir()
	build := func(want string) []byte {
		t.Helper()
		var log bytes.Buffer
		var mu sync.Mutex // the initramfs goroutine logs too
		logf := func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(&log, format+"\n", args...)
		}
		out := filepath.Join(t.TempDir(), "disk.img")
		if _, err := BuildImage(context.Background(), p.im, out, Options{InitBinary: p.init, Log: logf, InitramfsCache: cache}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), want) {
			t.Errorf("log:\n%s\nwant a line saying %q", log.String(), want)
		}
		_, _, initrd, err := ReadBoot(out, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(initrd)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	const built, cached = "(built alongside the squashfs)", "(from the cache "
	first := build(built)
	if again := build(cached); !bytes.Equal(again, first) {
		t.Error("the cached initramfs differs from the one built")
	}
	os.WriteFile(e2fsck, append(data, 0), 0o755)
	if b := build(built); bytes.Equal(b, first) {
		t.Error("a changed e2fsck gave the same initramfs")
	}
	p.im.Init.DeviceTimeout = config.Duration(7 * time.Second)
	build(built)
	build(cached)
}
