package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/internal/demo"
	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/layout"
)

func runDemo(c Context, ctx context.Context, args []string) error {
	fs := c.flagSet("demo", "[--arch A] [--kernel-cache DIR] [--out DIR]",
		"ovroot demo --arch arm64 && ovroot run out/demo/arm64.img")
	arch := fs.String("arch", "x86_64", "target architecture `ARCH`: "+layout.ArchNames)
	cache := fs.String("kernel-cache", "", "kernel cache `DIR` holding <debarch>/vmlinuz and <debarch>/modules (debarch amd64, arm64 or armhf), as ovroot fetch --cache DIR leaves it (default: the kernel caches a build looks in, fetching Debian's kernel when none has one)")
	out := fs.String("out", "out/demo", "output `DIR`: <arch>.img and rootfs-<arch>/")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("demo", pos); err != nil {
		return err
	}
	a, err := layout.ParseArch(*arch)
	if err != nil {
		return fmt.Errorf("--arch: %w", err)
	}
	rootfs := filepath.Join(*out, "rootfs-"+string(a))
	os.RemoveAll(rootfs)
	c.logf("demo: building the %s rootfs (u-root userland) in %s", a, rootfs)
	if err := demo.BuildRootfs(ctx, a, &gobuild.Cache{Log: c.logf}, rootfs); err != nil {
		return err
	}
	im := config.DefaultImage(a)
	if *cache != "" {
		k := filepath.Join(*cache, a.DebianArch())
		im.Kernel = filepath.Join(k, "vmlinuz")
		im.ModulesDir = filepath.Join(k, "modules")
		if _, err := os.Stat(filepath.Join(k, "e2fsck")); err == nil {
			im.E2fsck = filepath.Join(k, "e2fsck") // repairs the data partition
		}
	} else {
		k, err := imagebuild.DefaultKernel(ctx, a, c.logf)
		if err != nil {
			return err
		}
		c.logf("demo: Debian's kernel %s from %s", k.Release, k.Dir)
		im.Kernel, im.ModulesDir = k.Kernel, k.Modules
	}
	im.Rootfs = rootfs
	if err := im.Validate(); err != nil {
		return err
	}
	img := filepath.Join(*out, string(a)+".img")
	if _, err := imagebuild.BuildImage(ctx, im, img, imagebuild.Options{Log: c.logf, Progress: c.terminal()}); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "%s\n", img)
	return nil
}
