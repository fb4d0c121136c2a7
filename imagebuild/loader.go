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
	"path/filepath"
	"strings"

	"github.com/ovroot/ovroot/internal/tmpdir"
	"github.com/ovroot/ovroot/layout"
)

// BootFile is one file of the boot partition besides the kernel, the
// initramfs and ovroot.json: Data, or the host file Source.
type BootFile struct {
	Name   string // path inside the partition, "/"-separated
	Source string
	Data   []byte
}

// LoaderFiles lists what the image's loader needs on the boot partition:
// for UEFI the loader binary (loaderBin, already checked) at the
// removable-media path, loader.conf and one Boot Loader Spec entry; for
// U-Boot extlinux.conf; for none nothing. Both loaders get the image's
// command line with layout.LoaderParam added, so the device can tell the
// chain that started it.
func LoaderFiles(arch layout.Arch, loader layout.Loader, cmdline, release, loaderBin string) []BootFile {
	options := strings.TrimSpace(cmdline + " " + layout.LoaderParam + "=" + string(loader))
	switch loader {
	case layout.LoaderUEFI:
		return []BootFile{
			{Name: arch.EFIBootFile(), Source: loaderBin},
			{Name: layout.LoaderConfFile, Data: []byte(LoaderConf())},
			{Name: layout.LoaderEntryFile, Data: []byte(BootEntry(release, options))},
		}
	case layout.LoaderUBoot:
		return []BootFile{{Name: layout.ExtlinuxFile, Data: []byte(Extlinux(options))}}
	}
	return nil
}

// LoaderConf is systemd-boot's loader/loader.conf (loader.conf(5)): boot
// the one entry at once, and no editor, so no one at the console can change
// the kernel command line (init=/bin/sh) of a device.
func LoaderConf() string {
	return "timeout 0\neditor no\ndefault " + filepath.Base(layout.LoaderEntryFile) + "\n"
}

// BootEntry is a Boot Loader Spec type #1 entry
// (https://uapi-group.org/specifications/specs/boot_loader_specification/):
// paths are absolute in the partition that holds the entry.
func BootEntry(release, options string) string {
	var b strings.Builder
	b.WriteString("title ovroot\n")
	if release != "" {
		b.WriteString("version " + release + "\n")
	}
	b.WriteString("linux /" + layout.KernelFile + "\n")
	b.WriteString("initrd /" + layout.InitrdFile + "\n")
	b.WriteString("options " + options + "\n")
	return b.String()
}

// Extlinux is U-Boot's extlinux/extlinux.conf (doc/develop/distro.rst):
// one label, booted at once (timeout is in tenths of a second; 0 = no
// menu). With no fdt line U-Boot hands the kernel its own device tree,
// the board's.
func Extlinux(options string) string {
	return "default ovroot\ntimeout 0\n\nlabel ovroot\n" +
		"    kernel /" + layout.KernelFile + "\n" +
		"    initrd /" + layout.InitrdFile + "\n" +
		"    append " + options + "\n"
}

// CheckEFI makes sure p is a UEFI application firmware of arch can start:
// PE/COFF ("MZ", then "PE\0\0" at the offset in 0x3c) whose machine is the
// arch's (UEFI spec 2.10 §2.1.1), and whose subsystem is an EFI application.
func CheckEFI(what, p string, arch layout.Arch) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", what, p)
	}
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if n < 0x40 || !bytes.HasPrefix(head, []byte("MZ")) {
		return fmt.Errorf("%s %s is not a PE/COFF EFI application (no \"MZ\" header)", what, p)
	}
	pe := int(binary.LittleEndian.Uint32(head[0x3c:]))
	if pe+24+70 > n || string(head[pe:pe+4]) != "PE\x00\x00" {
		return fmt.Errorf("%s %s is not a PE/COFF EFI application (no \"PE\" signature)", what, p)
	}
	machines := map[uint16]string{0x8664: "x86_64", 0xaa64: "arm64", 0x14c: "i386", 0x1c2: "arm", 0x1c4: "arm", 0x5064: "riscv64"}
	m := binary.LittleEndian.Uint16(head[pe+4:])
	want := map[layout.Arch]uint16{layout.X86_64: 0x8664, layout.ARM64: 0xaa64}[arch]
	if m != want {
		got := machines[m]
		if got == "" {
			got = fmt.Sprintf("machine 0x%x", m)
		}
		return fmt.Errorf("%s %s is an EFI binary for %s, the image is %s", what, p, got, arch)
	}
	// Optional header: subsystem at offset 68 (PE32 and PE32+ alike).
	if sub := binary.LittleEndian.Uint16(head[pe+24+68:]); sub != 10 {
		return fmt.Errorf("%s %s is a PE/COFF binary of subsystem %d, not an EFI application (10)", what, p, sub)
	}
	return nil
}

// systemdBootName is Debian's file name of systemd-boot for the arch.
func systemdBootName(arch layout.Arch) string { return "systemd-boot" + arch.EFIArch() + ".efi" }

// systemdBootHost is where Debian's systemd-boot-efi installs it.
const systemdBootHost = "/usr/lib/systemd/boot/efi"

// systemdBootPlaces are where systemd-boot for the arch is looked for when
// the image names no loader file: each kernel cache (cacheArchDirs), where
// ovroot fetch and make kernels put it, then this machine's
// systemd-boot-efi package (for its own arch).
func systemdBootPlaces(arch layout.Arch) []string {
	name := systemdBootName(arch)
	var places []string
	for _, d := range cacheArchDirs(arch) {
		places = append(places, filepath.Join(d, name))
	}
	return append(places, filepath.Join(systemdBootHost, name))
}

// FindSystemdBoot returns systemd-boot for arch: one already on this
// machine (systemdBootPlaces), else Debian's systemd-boot-efi for the arch
// fetched into the kernel cache.
func FindSystemdBoot(ctx context.Context, arch layout.Arch, logf func(string, ...any)) (string, error) {
	for _, p := range systemdBootPlaces(arch) {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := CheckEFI("systemd-boot", p, arch); err != nil {
			logf("loader: ignoring %s: %v", p, err)
			continue
		}
		return filepath.Abs(p)
	}
	d, err := KernelCacheDir()
	if err != nil {
		return "", err
	}
	dest := filepath.Join(d, arch.DebianArch(), systemdBootName(arch))
	logf("loader: no systemd-boot found (%s); fetching Debian's systemd-boot-efi:%s", strings.Join(systemdBootPlaces(arch), ", "), arch.DebianArch())
	if err := FetchSystemdBoot(ctx, arch, dest); err != nil {
		return "", fmt.Errorf("%w (or give a loader binary: --loader-file, [boot] loader_file)", err)
	}
	return dest, nil
}

// FetchSystemdBoot downloads Debian's systemd-boot-efi for arch and
// installs its EFI binary at dest.
func FetchSystemdBoot(ctx context.Context, arch layout.Arch, dest string) error {
	pkg := "systemd-boot-efi:" + arch.DebianArch()
	if err := fetchDebFile(ctx, pkg, "systemd-boot-efi_*.deb", filepath.Join(systemdBootHost, systemdBootName(arch)), dest, 0o644); err != nil {
		return err
	}
	if err := CheckEFI(pkg, dest, arch); err != nil {
		os.Remove(dest)
		return err
	}
	return nil
}

// kernelForLoader is the kernel file the boot partition carries: the
// kernel as given, except a gzip-compressed arm64 Image (Ubuntu's vmlinuz;
// Debian bookworm's is the plain Image) is decompressed into dir. Neither UEFI firmware nor systemd-boot can
// start it (the Image itself is the PE/COFF EFI application, its gzip is
// not), and U-Boot's booti needs kernel_comp_addr_r set to take it; QEMU
// -kernel starts the plain Image as well.
func kernelForLoader(kernel, dir string) (string, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 2)
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, gzipMagic) {
		return kernel, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", kernel, err)
	}
	out := filepath.Join(dir, "Image")
	w, err := os.Create(out)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, gz); err != nil {
		w.Close()
		return "", fmt.Errorf("kernel %s: decompress: %w", kernel, err)
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	return out, nil
}

// fetchDebFile downloads Debian package pkg with apt-get (debGlob matches
// the .deb it leaves), unpacks it and installs its file member (an
// absolute path in the package) at dest.
func fetchDebFile(ctx context.Context, pkg, debGlob, member, dest string, mode os.FileMode) error {
	tmp, done, err := tmpdir.Make("deb")
	if err != nil {
		return err
	}
	defer done()
	arch := pkg[strings.LastIndex(pkg, ":")+1:]
	if err := runIn(ctx, tmp, "apt-get", "download", "-q", pkg); err != nil {
		return fmt.Errorf("fetch %s (a foreign arch needs `dpkg --add-architecture %s && apt-get update` first): %w", pkg, arch, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, debGlob))
	if len(debs) != 1 {
		return fmt.Errorf("fetch %s: apt-get download left %d .deb files", pkg, len(debs))
	}
	if err := runIn(ctx, tmp, "dpkg-deb", "-x", debs[0], filepath.Join(tmp, "x")); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(tmp, "x", member))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("fetch %s: the package has no %s", pkg, member)
		}
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(dest, data, mode)
}
