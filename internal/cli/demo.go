package cli

import (
	"context"
	"fmt"
	"io"
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
	kcache := fs.String("kernel-cache", "", "kernel cache `DIR` holding <debarch>/vmlinuz and <debarch>/modules (debarch amd64, arm64 or armhf), as ovroot fetch --cache DIR leaves it (default: the kernel caches a build looks in, fetching Debian's kernel when none has one)")
	out := fs.String("out", "out/demo", "output `DIR`: <arch>.img (two slots, release 1), <arch>-update.bundle (release 2) and their rootfs-<arch>/, rootfs-<arch>-2/")
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
	// Release 1 is the image; release 2, the same root saying 2, is an
	// update bundle beside it, for ovrootctl upgrade in the demo.
	rootfs := filepath.Join(*out, "rootfs-"+string(a))
	rootfs2 := rootfs + "-2"
	progs, err := (&gobuild.Cache{Log: c.logf}).Programs(ctx, a, demo.Programs())
	if err != nil {
		return err
	}
	for _, r := range []struct{ release, dir string }{{"1", rootfs}, {"2", rootfs2}} {
		os.RemoveAll(r.dir)
		c.logf("demo: building the %s rootfs of release %s (u-root userland) in %s", a, r.release, r.dir)
		if err := demo.Install(r.dir, progs, a, r.release, demo.Commands); err != nil {
			return err
		}
	}
	im := config.DefaultImage(a)
	im.Slots = 2 // A/B: ovrootctl upgrade installs release 2 into the other slot
	if *kcache != "" {
		k := filepath.Join(*kcache, a.DebianArch())
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
	// The demo signs as a vendor does: its own key pair (kept beside the
	// images and reused), trusted by release 1, signing release 2.
	key := filepath.Join(*out, "demo-key")
	if _, err := os.Stat(key + ".key"); err != nil {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		if err := runKeygen(Context{Stdout: io.Discard, Stderr: c.Stderr}, ctx, []string{"-o", key}); err != nil {
			return err
		}
	}
	im.Update.TrustedKeys = []string{key + ".pub"}
	im.Update.Version = "1"
	im.Rootfs = rootfs
	if err := im.Validate(); err != nil {
		return err
	}
	img := filepath.Join(*out, string(a)+".img")
	if _, err := imagebuild.BuildImage(ctx, im, img, imagebuild.Options{Log: c.logf, Progress: c.terminal()}); err != nil {
		return err
	}
	im2 := *im
	im2.Rootfs = rootfs2
	im2.Update.Version = "2"
	im2.Update.SignKey = key + ".key"
	bundle := filepath.Join(*out, string(a)+"-update.bundle")
	tmp, err := os.MkdirTemp(*out, ".ovroot-update-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if _, err := imagebuild.BuildImage(ctx, &im2, filepath.Join(tmp, "disk.img"), imagebuild.Options{Log: c.logf, Bundle: bundle, ImageDropped: true}); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "%s\n%s\n", img, bundle)
	c.logf("demo: boot it: ovroot run --disk %s %s   (then in the guest: ovrootctl upgrade /dev/vdb --reboot)", bundle, img)
	return nil
}
