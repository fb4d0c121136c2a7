package cli

import (
	"context"
	"fmt"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

func runRun(c Context, ctx context.Context, args []string) error {
	fs := c.flagSet("run", "[flags] disk.img",
		"ovroot run --timeout 2m out/demo/arm64.img   (in QEMU: Ctrl-a x quits)")
	arch := fs.String("arch", "", "override the arch recorded in the image")
	timeout := fs.Duration("timeout", 0, "kill QEMU and fail after this long (0 = no limit)")
	memory := fs.Int("memory", 512, "guest memory in MiB")
	cmdline := fs.String("append", "", "extra kernel command line parameters")
	var extra stringList
	fs.Var(&extra, "qemu-arg", "extra QEMU argument, repeatable")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: give exactly one disk image", ErrUsage)
	}
	cfg, cleanup, err := qemu.ForImage(pos[0])
	if err != nil {
		return err
	}
	defer cleanup()
	if *arch != "" {
		if cfg.Arch, err = layout.ParseArch(*arch); err != nil {
			return fmt.Errorf("--arch: %w", err)
		}
	}
	if *cmdline != "" {
		cfg.Cmdline += " " + *cmdline
	}
	cfg.MemoryMB = *memory
	cfg.Extra = extra
	return qemu.Run(ctx, cfg, c.Stdin, c.Stdout, *timeout)
}
