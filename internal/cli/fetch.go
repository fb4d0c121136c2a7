package cli

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/layout"
)

// hostArch is the arch of this machine, when ovroot builds for it.
func hostArch() (layout.Arch, bool) {
	for _, a := range layout.Arches {
		if a.GOARCH() == runtime.GOARCH {
			return a, true
		}
	}
	return "", false
}

// parseArches reads --arch's comma-separated list ("all" for every arch).
func parseArches(s string) ([]layout.Arch, error) {
	if s == "all" {
		return layout.Arches, nil
	}
	var out []layout.Arch
	for _, n := range strings.Split(s, ",") {
		a, err := layout.ParseArch(strings.TrimSpace(n))
		if err != nil {
			return nil, fmt.Errorf("--arch: %w, or all", err)
		}
		out = append(out, a)
	}
	return out, nil
}

func runFetch(c Context, ctx context.Context, args []string) error {
	def := "x86_64"
	if a, ok := hostArch(); ok {
		def = string(a)
	}
	fs := c.flagSet("fetch", "[--arch A,...|all] [--cache DIR]",
		"ovroot fetch --arch arm64 && ovroot build --arch arm64 --rootfs rootfs.tar.gz -o disk.img   (the build takes the fetched kernel)")
	arches := fs.String("arch", def, "`ARCHES` to fetch for: "+layout.ArchNames+", comma-separated, or all")
	cacheDef, _ := imagebuild.KernelCacheDir()
	cache := fs.String("cache", cacheDef, "kernel cache `DIR` to fetch into ($OVROOT_KERNEL_CACHE, else kernels/ in ovroot's cache; builds look there)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("fetch", pos); err != nil {
		return err
	}
	list, err := parseArches(*arches)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if *cache == "" {
		return fmt.Errorf("%w: no kernel cache directory: give --cache DIR or set OVROOT_KERNEL_CACHE", ErrUsage)
	}
	for _, a := range list {
		f, err := imagebuild.Fetch(ctx, a, *cache, c.logf)
		if err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
		what := []string{"kernel " + f.Kernel.Release + " (vmlinuz, modules/)", "e2fsck"}
		if f.SystemdBoot != "" {
			what = append(what, "systemd-boot")
		}
		state := "fetched"
		if f.AlreadyThere {
			state = "already there"
		}
		fmt.Fprintf(c.Stdout, "%s: %s in %s (%s)\n", a, strings.Join(what, ", "), f.Kernel.Dir, state)
	}
	return nil
}

// version is ovroot's version: the module version go install recorded (or
// "(devel)" for a build from a checkout), the commit when the build knew
// it, and the Go that built it.
func version() string {
	v, rev, dirty := "(devel)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	out := "ovroot " + v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " commit " + rev
		if dirty {
			out += " with uncommitted changes"
		}
	}
	return out + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}

func runVersion(c Context, ctx context.Context, args []string) error {
	fs := c.flagSet("version", "", "ovroot version")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("version", pos); err != nil {
		return err
	}
	fmt.Fprintln(c.Stdout, version())
	return nil
}
