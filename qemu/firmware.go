package qemu

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ovroot/ovroot/layout"
)

// Firmware is what QEMU runs before the guest's loader: U-Boot as -bios,
// or UEFI as two pflash drives.
type Firmware struct {
	BIOS string // -bios FILE (U-Boot)
	Code string // UEFI code, attached read-only
	Vars string // UEFI variable store, writable: always a private copy
}

// firmwareFiles are the Debian packages' firmware for each loader and arch,
// by Debian arch: ovmf, qemu-efi-aarch64 and u-boot-qemu. Code and vars
// templates for UEFI; BIOS for U-Boot.
var firmwareFiles = map[layout.Loader]map[string]struct{ code, vars, pkg string }{
	layout.LoaderUEFI: {
		"amd64": {"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf"},
		"arm64": {"/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd", "qemu-efi-aarch64"},
	},
	layout.LoaderUBoot: {
		"arm64": {"/usr/lib/u-boot/qemu_arm64/u-boot.bin", "", "u-boot-qemu"},
		"armhf": {"/usr/lib/u-boot/qemu_arm/u-boot.bin", "", "u-boot-qemu"},
	},
}

// FirmwareOptions choose the firmware for a loader boot; zero = the
// Debian packages' files for the image's arch and loader.
type FirmwareOptions struct {
	// File replaces the firmware: U-Boot's -bios image, or the UEFI code.
	File string
	// Vars is the UEFI variable store template to copy (with File).
	Vars string
}

// PrepareFirmware returns the firmware that boots an image of arch through
// loader, with any UEFI variable store copied into dir: the VM writes its
// boot entries there, never into the template (under /usr/share, or a
// user's file).
func PrepareFirmware(arch layout.Arch, loader layout.Loader, o FirmwareOptions, dir string) (Firmware, error) {
	std, ok := firmwareFiles[loader][arch.DebianArch()]
	code, vars := o.File, o.Vars
	if code == "" {
		if !ok {
			return Firmware{}, fmt.Errorf("no firmware known to boot a %s image through %s; give one with --firmware", arch, loader)
		}
		code = std.code
		if vars == "" {
			vars = std.vars
		}
	}
	if vars != "" && loader != layout.LoaderUEFI {
		return Firmware{}, fmt.Errorf("--firmware-vars is a UEFI variable store; a %s image boots through %s", arch, loader)
	}
	for _, f := range []string{code, vars} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			hint := ""
			if ok && (f == std.code || f == std.vars) {
				hint = fmt.Sprintf(" (Debian package %s)", std.pkg)
			}
			return Firmware{}, fmt.Errorf("firmware for %s through %s: %w%s", arch, loader, err, hint)
		}
	}
	if loader == layout.LoaderUBoot {
		return Firmware{BIOS: code}, nil
	}
	fw := Firmware{Code: code}
	if vars != "" {
		fw.Vars = filepath.Join(dir, "efivars.fd")
		if err := copyFile(vars, fw.Vars); err != nil {
			return Firmware{}, fmt.Errorf("copy UEFI variable store %s: %w", vars, err)
		}
	}
	return fw, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ErrNoLoader is returned by ForImageLoader for an image that has no
// loader on its disk (loader none, or built before loaders).
var ErrNoLoader = errors.New("the image has no boot loader on its disk")
