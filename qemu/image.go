package qemu

import (
	"fmt"
	"os"

	"github.com/ovroot/ovroot/imagebuild"
)

// ForImage reads what a disk image records about booting it (arch, kernel,
// initramfs, command line) and returns the Config that boots it with the
// image as its disk. cleanup removes the extracted kernel and initramfs.
func ForImage(image string) (Config, func(), error) {
	dir, err := os.MkdirTemp("", "ovroot-run-")
	if err != nil {
		return Config{}, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	info, kernel, initrd, err := imagebuild.ReadBoot(image, dir)
	if err != nil {
		cleanup()
		return Config{}, nil, fmt.Errorf("read boot partition of %s: %w", image, err)
	}
	return Config{
		Arch:    info.Arch,
		Kernel:  kernel,
		Initrd:  initrd,
		Cmdline: info.Cmdline,
		Disks:   []string{image},
	}, cleanup, nil
}
