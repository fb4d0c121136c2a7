package imagebuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
	"golang.org/x/sys/unix"
)

func TestLoaderFiles(t *testing.T) {
	const cmdline = "console=ttyS0 panic=-1"
	cases := []struct {
		name   string
		arch   layout.Arch
		loader layout.Loader
		want   map[string]string // name -> content; "@" + source for a copied file
	}{
		{"x86_64 uefi", layout.X86_64, layout.LoaderUEFI, map[string]string{
			"EFI/BOOT/BOOTX64.EFI":       "@/sd-boot.efi",
			"loader/loader.conf":         "timeout 0\neditor no\ndefault ovroot.conf\n",
			"loader/entries/ovroot.conf": "title ovroot\nversion 6.1.0-56\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0 panic=-1 ovroot.loader=uefi\n",
		}},
		{"arm64 uefi", layout.ARM64, layout.LoaderUEFI, map[string]string{
			"EFI/BOOT/BOOTAA64.EFI":      "@/sd-boot.efi",
			"loader/loader.conf":         "timeout 0\neditor no\ndefault ovroot.conf\n",
			"loader/entries/ovroot.conf": "title ovroot\nversion 6.1.0-56\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0 panic=-1 ovroot.loader=uefi\n",
		}},
		{"arm64 uboot", layout.ARM64, layout.LoaderUBoot, map[string]string{
			"extlinux/extlinux.conf": "default ovroot\ntimeout 0\n\nlabel ovroot\n    kernel /vmlinuz\n    initrd /initrd.img\n    append console=ttyS0 panic=-1 ovroot.loader=uboot\n",
		}},
		{"none", layout.X86_64, layout.LoaderNone, map[string]string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := map[string]string{}
			for _, f := range LoaderFiles(c.arch, c.loader, cmdline, "6.1.0-56", "/sd-boot.efi") {
				if _, dup := got[f.Name]; dup {
					t.Errorf("%s listed twice", f.Name)
				}
				if f.Source != "" {
					got[f.Name] = "@" + f.Source
				} else {
					got[f.Name] = string(f.Data)
				}
			}
			if len(got) != len(c.want) {
				t.Errorf("files = %v, want %d files", keys(got), len(c.want))
			}
			for name, want := range c.want {
				if got[name] != want {
					t.Errorf("%s =\n%q\nwant\n%q", name, got[name], want)
				}
			}
		})
	}
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// pe writes a minimal PE/COFF header: machine and subsystem.
func pe(t *testing.T, machine, subsystem uint16) string {
	t.Helper()
	b := make([]byte, 512)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x84:], machine)
	binary.LittleEndian.PutUint16(b[0x80+24+68:], subsystem)
	p := filepath.Join(t.TempDir(), "loader.efi")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckEFI(t *testing.T) {
	text := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(text, []byte("not a loader at all, just some words in a file"), 0o644)
	cases := []struct {
		name, path string
		arch       layout.Arch
		err        string // "" = accepted
	}{
		{"x64 app", pe(t, 0x8664, 10), layout.X86_64, ""},
		{"aa64 app", pe(t, 0xaa64, 10), layout.ARM64, ""},
		{"x64 app for arm64", pe(t, 0x8664, 10), layout.ARM64, "EFI binary for x86_64, the image is arm64"},
		{"aa64 app for x86_64", pe(t, 0xaa64, 10), layout.X86_64, "EFI binary for arm64, the image is x86_64"},
		{"a driver", pe(t, 0x8664, 11), layout.X86_64, "subsystem 11, not an EFI application"},
		{"text", text, layout.X86_64, "no \"MZ\" header"},
		{"missing", filepath.Join(t.TempDir(), "nope.efi"), layout.X86_64, "no such file"},
		{"directory", t.TempDir(), layout.X86_64, "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckEFI("loader file", c.path, c.arch)
			if c.err == "" {
				if err != nil {
					t.Errorf("CheckEFI(%s) = %v, want nil", c.path, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "loader file") {
				t.Errorf("CheckEFI(%s) = %v, want an error naming the loader file and %q", c.path, err, c.err)
			}
		})
	}
	// Debian's systemd-boot, where installed, passes.
	if p := "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"; fileExists(p) {
		if err := CheckEFI("systemd-boot", p, layout.X86_64); err != nil {
			t.Errorf("CheckEFI(%s) = %v", p, err)
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// readBootFile reads one file of an image's boot partition.
func readBootFile(t *testing.T, image, name string) ([]byte, error) {
	t.Helper()
	d, err := diskfs.Open(image, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile("/"+name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// The boot partition of a loader image holds what LoaderFiles lists, byte
// for byte, a gzip arm64 kernel decompressed, and ovroot.json names the
// loader; U-Boot's partition 1 carries the bootable flag; the bytes are
// the same for the same inputs.
func TestBuildLoaderImage(t *testing.T) {
	needTools(t, "mksquashfs")
	_, initrd := fakeBootFiles(t)
	// A gzip-compressed arm64 Image, as Ubuntu ships vmlinuz.
	img := make([]byte, 1<<20)
	copy(img[0x38:], "ARM\x64")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(img)
	zw.Close()
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(kernel, gz.Bytes(), 0o644)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	loaderBin := pe(t, 0xaa64, 10)
	for _, loader := range []layout.Loader{layout.LoaderUEFI, layout.LoaderUBoot} {
		t.Run(string(loader), func(t *testing.T) {
			spec := Spec{Arch: layout.ARM64, Kernel: kernel, Initramfs: initrd, Cmdline: "console=ttyAMA0", Loader: loader,
				Rootfs: root, Compression: "gzip", BootSize: 40 << 20, DataSize: 20 << 20, KernelRelease: "6.1.0-test"}
			if loader == layout.LoaderUEFI {
				spec.LoaderFile = loaderBin
			}
			out := filepath.Join(t.TempDir(), "disk.img")
			if _, err := Build(context.Background(), spec, out); err != nil {
				t.Fatal(err)
			}
			files := LoaderFiles(spec.Arch, loader, spec.Cmdline, spec.KernelRelease, spec.LoaderFile)
			if len(files) == 0 {
				t.Fatal("no loader files")
			}
			for _, f := range files {
				want := f.Data
				if f.Source != "" {
					want, _ = os.ReadFile(f.Source)
				}
				got, err := readBootFile(t, out, f.Name)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("boot partition %s: %v, %d bytes, want %d bytes of %s", f.Name, err, len(got), len(want), f.Source)
				}
			}
			if got, _ := readBootFile(t, out, layout.KernelFile); !bytes.Equal(got, img) {
				t.Errorf("boot partition %s is not the decompressed Image (%d bytes, want %d)", layout.KernelFile, len(got), len(img))
			}
			info, err := ReadBootInfo(out)
			if err != nil || info.Loader != loader {
				t.Errorf("ReadBootInfo = %+v, %v; want loader %s", info, err, loader)
			}
			d, _ := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
			pt, _ := d.GetPartitionTable()
			attrs := pt.(*gpt.Table).Partitions[0].Attributes
			d.Close()
			if bootable := attrs&(1<<2) != 0; bootable != (loader == layout.LoaderUBoot) {
				t.Errorf("partition 1 attributes %#x: legacy bootable = %v, want it for uboot only", attrs, bootable)
			}
			out2 := filepath.Join(t.TempDir(), "disk.img")
			if _, err := Build(context.Background(), spec, out2); err != nil {
				t.Fatal(err)
			}
			if sum(t, out) != sum(t, out2) {
				t.Error("two builds from the same inputs differ")
			}
			checkFATEpoch(t, out)
			checkFATClean(t, out)
		})
	}
	// Refused: uboot on x86_64, uefi without or with a wrong loader.
	for _, c := range []struct {
		name string
		spec Spec
		err  string
	}{
		{"uboot x86_64", Spec{Arch: layout.X86_64, Loader: layout.LoaderUBoot}, "uboot does not boot x86_64"},
		{"uefi without file", Spec{Arch: layout.ARM64, Loader: layout.LoaderUEFI}, "no loader binary"},
		{"uefi x64 file on arm64", Spec{Arch: layout.ARM64, Loader: layout.LoaderUEFI, LoaderFile: pe(t, 0x8664, 10)}, "EFI binary for x86_64"},
	} {
		c.spec.Kernel, c.spec.Initramfs, c.spec.Rootfs = kernel, initrd, root
		c.spec.BootSize, c.spec.DataSize = 40<<20, 20<<20
		if _, err := Build(context.Background(), c.spec, filepath.Join(t.TempDir(), "x.img")); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: Build = %v, want %q", c.name, err, c.err)
		}
	}
}

// checkFATEpoch lists the boot partition with mtools and fails on any
// entry, "." and ".." included, with a time other than the FAT epoch: a
// clock time makes two builds seconds apart differ (two builds within the
// same two seconds, as above, cannot show it).
// checkFATClean runs fsck.fat -n on the boot partition: no findings.
func checkFATClean(t *testing.T, image string) {
	t.Helper()
	tool, err := exec.LookPath("fsck.fat")
	if err != nil {
		if tool, err = exec.LookPath("/usr/sbin/fsck.fat"); err != nil {
			testenv.Missing(t, "fsck.fat not installed (make deps)")
		}
	}
	parts, err := ListPartitions(image)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	esp := filepath.Join(t.TempDir(), "boot.img")
	dst, err := os.Create(esp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, io.NewSectionReader(src, parts[0].Start, parts[0].Size))
	dst.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "-n", esp).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Fixing") || strings.Contains(string(out), "Auto-correcting") {
		t.Errorf("fsck.fat -n on the boot partition: %v\n%s", err, out)
	}
}

func checkFATEpoch(t *testing.T, image string) {
	t.Helper()
	needTools(t, "mdir")
	parts, err := ListPartitions(image)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mdir", "-/", "-a", "-i", fmt.Sprintf("%s@@%d", image, parts[0].Start), "::").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, out)
	}
	dated := regexp.MustCompile(`\d{4}-\d\d-\d\d +\d+:\d\d`)
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if d := dated.FindString(l); d != "" {
			n++
			if !regexp.MustCompile(`^1980-01-01 +0:00$`).MatchString(d) {
				t.Errorf("boot partition entry not at the FAT epoch: %q", l)
			}
		}
	}
	if n < 6 {
		t.Errorf("mdir listed %d dated entries, want the dot entries too:\n%s", n, out)
	}
}

// A two-slot U-Boot image: boot.scr and slot a's entry file, confirmed,
// instead of extlinux.conf (which distro boot would run first); no loader
// is refused.
func TestBuildSlotsUBoot(t *testing.T) {
	needTools(t, "mksquashfs")
	_, initrd := fakeBootFiles(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	spec := Spec{Arch: layout.ARM64, Initramfs: initrd, Cmdline: "console=ttyAMA0", Loader: layout.LoaderUBoot,
		Rootfs: root, Compression: "gzip", BootSize: 40 << 20, DataSize: 20 << 20, KernelRelease: "6.1.0-test", Slots: 2}
	img := make([]byte, 1<<20)
	copy(img[0x38:], "ARM\x64")
	spec.Kernel = filepath.Join(t.TempDir(), "Image")
	os.WriteFile(spec.Kernel, img, 0o644)
	out := filepath.Join(t.TempDir(), "disk.img")
	res, err := Build(context.Background(), spec, out)
	if err != nil {
		t.Fatal(err)
	}
	// Read with mtools: go-diskfs v1.9.4's reader returns some files
	// rounded up to whole clusters (this one: 6103 bytes read as 6144).
	needTools(t, "mtype")
	parts, err := ListPartitions(out)
	if err != nil {
		t.Fatal(err)
	}
	scr, err := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", out, parts[0].Start), "::/"+layout.BootScriptFile).Output()
	if err != nil || !bytes.Equal(scr, slot.UImageScript(layout.ARM64, "ovroot A/B boot", slot.BootScript(layout.ARM64))) {
		t.Errorf("boot.scr: %v, %d bytes: not the script for arm64", err, len(scr))
	}
	env, err := readBootFile(t, out, layout.EntriesDir+"/"+slot.EnvFileName(layout.SlotA))
	if err != nil {
		t.Fatal(err)
	}
	e, tries, err := slot.ParseEnv(string(env))
	if err != nil || tries != 0 || e.Slot != layout.SlotA || e.Generation != 1 || e.BuildID != res.BuildID || e.Loader != layout.LoaderUBoot {
		t.Errorf("slot a's entry = %+v, tries %d, %v (build %s)", e, tries, err, res.BuildID)
	}
	for _, absent := range []string{layout.ExtlinuxFile, layout.LoaderConfFile} {
		if _, err := readBootFile(t, out, absent); err == nil {
			t.Errorf("%s is on a two-slot U-Boot image", absent)
		}
	}
	if got, _ := readBootFile(t, out, "slot-a/"+layout.KernelFile); !bytes.Equal(got, img) {
		t.Error("slot-a/vmlinuz is not the kernel")
	}
	checkFATClean(t, out)
	// A bundle that fills its disk fails the build and leaves no image.
	testenv.RequireRoot(t, "mount a small tmpfs for the bundle")
	full := t.TempDir()
	if err := unix.Mount("tmpfs", full, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(full, 0) })
	failed := filepath.Join(t.TempDir(), "failed.img")
	spec.Bundle = filepath.Join(full, "x.bundle")
	if _, err := Build(context.Background(), spec, failed); err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("Build with a bundle on a full disk = %v", err)
	}
	if _, err := os.Stat(failed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a build whose bundle failed left the image: %v", err)
	}
	if ents, _ := os.ReadDir(full); len(ents) != 0 {
		t.Errorf("a failed bundle left %v", ents)
	}
	spec.Bundle = ""
	spec.Loader = layout.LoaderNone
	if _, err := Build(context.Background(), spec, filepath.Join(t.TempDir(), "x.img")); err == nil || !strings.Contains(err.Error(), "slots = 2 needs loader uefi or uboot") {
		t.Errorf("slots = 2 with no loader: %v", err)
	}
}
