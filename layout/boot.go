package layout

import "fmt"

// Loader is how firmware finds the kernel on an image's boot partition, as
// image.toml's [boot] loader names it and ovroot.json records it.
type Loader string

const (
	// LoaderUEFI: the boot partition is an EFI System Partition holding
	// systemd-boot as the removable-media path (EFI/BOOT/BOOT<arch>.EFI)
	// and Boot Loader Spec entries (loader/entries/*.conf).
	LoaderUEFI Loader = "uefi"
	// LoaderUBoot: U-Boot's standard boot finds extlinux/extlinux.conf on
	// the first (bootable) partition, as on single-board computers.
	LoaderUBoot Loader = "uboot"
	// LoaderNone: no loader on the disk; something else hands the kernel
	// its initramfs (QEMU -kernel, a vendor boot ROM).
	LoaderNone Loader = "none"
)

// Loaders lists the loaders in the order the docs name them.
var Loaders = []Loader{LoaderUEFI, LoaderUBoot, LoaderNone}

// ParseLoader accepts a loader name.
func ParseLoader(s string) (Loader, error) {
	for _, l := range Loaders {
		if string(l) == s {
			return l, nil
		}
	}
	return "", fmt.Errorf("unknown loader %q (want uefi, uboot or none)", s)
}

// DefaultLoader is the loader an image of the arch gets unless it names
// one: UEFI where the arch has one firmware standard for it (every x86_64
// PC and VM, arm64 servers, SystemReady boards and QEMU's AAVMF), U-Boot
// elsewhere (32-bit ARM boards boot U-Boot from their own flash or SD).
func (a Arch) DefaultLoader() Loader {
	switch a {
	case X86_64, ARM64:
		return LoaderUEFI
	}
	return LoaderUBoot
}

// Supports reports whether images of the arch can boot through l, with a
// reason when not.
func (a Arch) Supports(l Loader) error {
	switch {
	case l == LoaderUEFI && a.EFIArch() == "":
		return fmt.Errorf("uefi does not boot %s images here (no systemd-boot for it; use uboot)", a)
	case l == LoaderUBoot && a == X86_64:
		return fmt.Errorf("uboot does not boot x86_64 images (PCs boot UEFI; use uefi)")
	}
	return nil
}

// EFIArch is the arch's suffix in UEFI file names (BOOTX64.EFI,
// systemd-bootx64.efi; UEFI spec 2.10 §3.5.1.1), "" when there is none here.
func (a Arch) EFIArch() string {
	switch a {
	case X86_64:
		return "x64"
	case ARM64:
		return "aa64"
	}
	return ""
}

// EFIBootFile is the removable-media boot path firmware starts when it
// has no boot entry of its own (UEFI spec 2.10 §3.5.1.1), inside the ESP.
func (a Arch) EFIBootFile() string {
	return "EFI/BOOT/BOOT" + upper(a.EFIArch()) + ".EFI"
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// Files a loader reads from the boot partition.
const (
	LoaderConfFile  = "loader/loader.conf"
	LoaderEntryFile = "loader/entries/ovroot.conf"
	ExtlinuxFile    = "extlinux/extlinux.conf"
)

// LoaderParam is the kernel parameter the boot entries add to the image's
// command line (ovroot.loader=uefi): the device can tell which chain booted
// it, and a direct boot (QEMU -kernel) has none.
const LoaderParam = "ovroot.loader"
