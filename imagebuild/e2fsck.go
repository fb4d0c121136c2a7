package imagebuild

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ovroot/ovroot/layout"
)

// e2fsckPlaces are where a static e2fsck for the arch is looked for when
// the image spec names none: <kernel cache>/<debarch>/e2fsck in each
// kernel cache (cacheArchDirs), where ovroot fetch and make kernels put it.
func e2fsckPlaces(arch layout.Arch) []string {
	var places []string
	for _, d := range cacheArchDirs(arch) {
		places = append(places, filepath.Join(d, cacheE2fsck))
	}
	return places
}

// FindE2fsck returns a static e2fsck for arch: one already on this machine
// (e2fsckPlaces), else Debian's e2fsck-static fetched into the kernel cache.
func FindE2fsck(ctx context.Context, arch layout.Arch, logf func(string, ...any)) (string, error) {
	for _, p := range e2fsckPlaces(arch) {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := CheckStatic(p, arch); err != nil {
			logf("e2fsck: ignoring %s: %v", p, err)
			continue
		}
		return filepath.Abs(p)
	}
	d, err := KernelCacheDir()
	if err != nil {
		return "", err
	}
	dest := filepath.Join(d, arch.DebianArch(), cacheE2fsck)
	logf("e2fsck: none found (%s); fetching Debian's e2fsck-static:%s", strings.Join(e2fsckPlaces(arch), ", "), arch.DebianArch())
	if err := FetchE2fsck(ctx, arch, dest); err != nil {
		return "", err
	}
	return dest, nil
}

// FetchE2fsck downloads Debian's e2fsck-static for arch with apt-get and
// unpacks its /sbin/e2fsck.static to dest.
func FetchE2fsck(ctx context.Context, arch layout.Arch, dest string) error {
	pkg := "e2fsck-static:" + arch.DebianArch()
	if err := fetchDebFile(ctx, pkg, "e2fsck-static_*.deb", "/sbin/e2fsck.static", dest, 0o755); err != nil {
		return err
	}
	if err := CheckStatic(dest, arch); err != nil {
		os.Remove(dest)
		return fmt.Errorf("%s: %w", pkg, err)
	}
	return nil
}

// runIn runs a command in dir; its output is in the error.
func runIn(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// CheckStatic makes sure p is an executable the device can run from the
// initramfs: ELF for arch, with no program interpreter (the initramfs has
// no dynamic loader or libc). See CheckStaticELF.
func CheckStatic(p string, arch layout.Arch) error { return checkStaticFile("program", p, arch) }
