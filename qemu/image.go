package qemu

import (
	"fmt"

	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/internal/tmpdir"
	"github.com/ovroot/ovroot/layout"
)

// ForImage reads what a disk image records about booting it (arch, kernel,
// initramfs, command line) and returns the Config that boots it directly
// (-kernel, -initrd, -append) with the image as its disk; an x86_64
// kernel that allows it is started at its PVH entry, uncompressed
// (PVHKernel). cleanup removes the extracted kernel and initramfs.
func ForImage(image string) (Config, func(), error) {
	dir, cleanup, err := tmpdir.Make("run")
	if err != nil {
		return Config{}, nil, err
	}
	info, kernel, initrd, err := imagebuild.ReadBoot(image, dir)
	if err != nil {
		cleanup()
		return Config{}, nil, fmt.Errorf("read boot partition of %s: %w", image, err)
	}
	if info.Arch == layout.X86_64 {
		if v, err := PVHKernel(kernel, ""); err == nil {
			kernel = v
		}
	}
	return Config{
		Arch:    info.Arch,
		Kernel:  kernel,
		Initrd:  initrd,
		Cmdline: info.Cmdline,
		Disks:   []string{image},
	}, cleanup, nil
}

// ForImageLoader returns the Config that boots an image the way a device
// does: firmware only, which finds the loader on the disk, which starts the
// kernel and initramfs with the command line of its boot entry. No
// -kernel, -initrd or -append. It fails with ErrNoLoader for an image
// without a loader. cleanup removes the private UEFI variable store.
func ForImageLoader(image string, o FirmwareOptions) (Config, func(), error) {
	info, err := imagebuild.ReadBootInfo(image)
	if err != nil {
		return Config{}, nil, fmt.Errorf("read boot partition of %s: %w", image, err)
	}
	if info.Loader == "" || info.Loader == layout.LoaderNone {
		return Config{}, nil, fmt.Errorf("%s: %w (loader %q in %s)", image, ErrNoLoader, info.Loader, layout.BootInfoFile)
	}
	dir, cleanup, err := tmpdir.Make("run")
	if err != nil {
		return Config{}, nil, err
	}
	fw, err := PrepareFirmware(info.Arch, info.Loader, o, dir)
	if err != nil {
		cleanup()
		return Config{}, nil, err
	}
	return Config{Arch: info.Arch, Firmware: fw, Disks: []string{image}}, cleanup, nil
}
