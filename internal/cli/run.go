package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

func runRun(c Context, ctx context.Context, args []string) error {
	fs := c.flagSet("run", "[flags] disk.img",
		"ovroot run --timeout 2m out/demo/arm64.img   (through its firmware and loader; in QEMU: Ctrl-a x quits)\n  ovroot run --disk out/demo/arm64-update.bundle out/demo/arm64.img   (the bundle is /dev/vdb in the guest)\n  ovroot run --direct --snapshot out/demo/arm64.img   (QEMU -kernel; the disk left as it was)")
	arch := fs.String("arch", "", "`ARCH` to boot as; it must match the arch recorded in the image (default: that arch)")
	timeout := fs.Duration("timeout", 0, "kill QEMU and fail after `DURATION`, e.g. 2m (0 = no limit)")
	memory := fs.Int("memory", 512, "guest memory in `MIB`")
	cmdline := fs.String("append", "", "extra kernel command line `PARAMS` (with --direct)")
	direct := fs.Bool("direct", false, "boot the kernel and initramfs of the boot partition with QEMU -kernel, skipping firmware and loader (faster)")
	snapshot := fs.Bool("snapshot", false, "leave the disk image untouched: the guest's writes are dropped at exit")
	firmware := fs.String("firmware", "", "firmware `FILE` instead of Debian's for the image's loader: UEFI code (OVMF/AAVMF) or U-Boot's u-boot.bin")
	vars := fs.String("firmware-vars", "", "UEFI variable store `FILE` to start from (copied, never written); with --firmware")
	var extra, disks stringList
	fs.Var(&extra, "qemu-arg", "extra QEMU `ARG`, repeatable")
	fs.Var(&disks, "disk", "another disk `FILE` for the guest, read-only (the first is /dev/vdb: an update bundle for ovrootctl upgrade /dev/vdb), repeatable")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: give exactly one disk image", ErrUsage)
	}
	if *vars != "" && *firmware == "" {
		return fmt.Errorf("%w: --firmware-vars needs --firmware", ErrUsage)
	}
	var cfg qemu.Config
	var cleanup func()
	if !*direct {
		cfg, cleanup, err = qemu.ForImageLoader(pos[0], qemu.FirmwareOptions{File: *firmware, Vars: *vars})
		if errors.Is(err, qemu.ErrNoLoader) && *firmware == "" {
			c.logf("%v: booting it directly (-kernel)", err)
			*direct = true
		} else if err != nil {
			return err
		} else if *cmdline != "" {
			cleanup()
			return fmt.Errorf("%w: --append needs --direct: through its loader the image boots the command line of its boot entry", ErrUsage)
		}
	}
	if *direct {
		if *firmware != "" {
			return fmt.Errorf("%w: --firmware boots through the image's loader; leave out --direct", ErrUsage)
		}
		if cfg, cleanup, err = qemu.ForImage(pos[0]); err != nil {
			return err
		}
	}
	defer cleanup()
	cfg.Snapshot = *snapshot
	if cfg.Arch, err = runArch(*arch, cfg.Arch, pos[0]); err != nil {
		return err
	}
	if *cmdline != "" {
		if i := strings.IndexFunc(*cmdline, func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
			return fmt.Errorf("%w: --append: control character %q at byte %d: the kernel command line is one line of printable text", ErrUsage, (*cmdline)[i], i)
		}
		cfg.Cmdline += " " + *cmdline
	}
	for _, d := range disks {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("--disk: %w", err)
		}
		if !fi.Mode().IsRegular() || fi.Size() == 0 {
			return fmt.Errorf("--disk %s: not a file with data (a bundle or a disk image)", d)
		}
		if fi.Size()%512 != 0 {
			// A disk is whole 512-byte sectors: QEMU would cut the tail off.
			return fmt.Errorf("--disk %s: %d bytes, not a whole number of 512-byte sectors (ovroot's bundles are)", d, fi.Size())
		}
		cfg.ReadOnlyDisks = append(cfg.ReadOnlyDisks, d)
	}
	cfg.MemoryMB = *memory
	cfg.Extra = extra
	return qemu.Run(ctx, cfg, c.Stdin, c.Stdout, *timeout)
}

// runArch is the arch to boot: the image's, which --arch may name again
// but not contradict (another arch's QEMU would only hang or fail in the
// firmware, far from the reason); --arch alone for an image that records
// none.
func runArch(flagArch string, recorded layout.Arch, image string) (layout.Arch, error) {
	if flagArch == "" {
		return recorded, nil
	}
	a, err := layout.ParseArch(flagArch)
	if err != nil {
		return "", fmt.Errorf("--arch: %w", err)
	}
	if recorded != "" && a != recorded {
		return "", fmt.Errorf("%w: --arch %s, but %s is an %s image (%s in its boot partition)", ErrUsage, a, image, recorded, layout.BootInfoFile)
	}
	return a, nil
}
