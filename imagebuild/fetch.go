package imagebuild

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/layout"
)

// The kernel cache holds, per Debian arch (amd64, arm64, armhf), what
// `ovroot fetch` brings from Debian:
//
//	<dir>/<debarch>/vmlinuz                 the kernel (linux-image-<flavour>)
//	<dir>/<debarch>/modules/                its lib/modules/<release> tree
//	<dir>/<debarch>/release                 the release; written last, so a
//	                                        kernel is there only with it
//	<dir>/<debarch>/e2fsck                  e2fsck-static
//	<dir>/<debarch>/systemd-boot<efi>.efi   systemd-boot-efi (amd64, arm64)
const (
	cacheKernel  = "vmlinuz"
	cacheModules = "modules"
	cacheRelease = "release"
	cacheE2fsck  = "e2fsck"
)

// KernelCacheDir is where ovroot fetch puts kernels, e2fsck and
// systemd-boot: $OVROOT_KERNEL_CACHE, else kernels/ in ovroot's cache
// ($OVROOT_CACHE, else ~/.cache/ovroot).
func KernelCacheDir() (string, error) {
	if d := os.Getenv("OVROOT_KERNEL_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	d, err := gobuild.CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "kernels"), nil
}

// cacheArchDirs are the kernel caches looked in for arch, in order:
// $OVROOT_KERNEL_CACHE (where make kernels puts them), .cache/kernels in
// the working directory (a checkout of ovroot), ovroot's own cache.
func cacheArchDirs(arch layout.Arch) []string {
	var dirs []string
	add := func(d string) {
		d = filepath.Join(d, arch.DebianArch())
		for _, x := range dirs {
			if x == d {
				return
			}
		}
		dirs = append(dirs, d)
	}
	if d := os.Getenv("OVROOT_KERNEL_CACHE"); d != "" {
		add(d)
	}
	add(filepath.Join(".cache", "kernels"))
	if d, err := gobuild.CacheDir(); err == nil {
		add(filepath.Join(d, "kernels"))
	}
	return dirs
}

// CachedKernel is a kernel and its modules in a kernel cache.
type CachedKernel struct {
	Dir, Kernel, Modules, Release string
}

// readCachedKernel returns the kernel in dir (a <cache>/<debarch>), if all
// of it is there.
func readCachedKernel(dir string) (CachedKernel, bool) {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	rel, err := os.ReadFile(filepath.Join(dir, cacheRelease))
	if err != nil {
		return CachedKernel{}, false
	}
	k := CachedKernel{Dir: dir, Kernel: filepath.Join(dir, cacheKernel), Modules: filepath.Join(dir, cacheModules), Release: strings.TrimSpace(string(rel))}
	if fi, err := os.Stat(k.Kernel); err != nil || !fi.Mode().IsRegular() {
		return CachedKernel{}, false
	}
	if fi, err := os.Stat(k.Modules); err != nil || !fi.IsDir() {
		return CachedKernel{}, false
	}
	return k, true
}

// FindCachedKernel returns the first whole kernel for arch in the kernel
// caches (cacheArchDirs).
func FindCachedKernel(arch layout.Arch) (CachedKernel, bool) {
	for _, d := range cacheArchDirs(arch) {
		if k, ok := readCachedKernel(d); ok {
			return k, true
		}
	}
	return CachedKernel{}, false
}

// DefaultKernel is the kernel a build uses when it is given none: one in
// the kernel caches, else Debian's fetched into KernelCacheDir.
func DefaultKernel(ctx context.Context, arch layout.Arch, logf func(string, ...any)) (CachedKernel, error) {
	if k, ok := FindCachedKernel(arch); ok {
		return k, nil
	}
	dir, err := KernelCacheDir()
	if err != nil {
		return CachedKernel{}, err
	}
	logf("kernel: none in %s; fetching Debian's (ovroot fetch --arch %s does it ahead)", strings.Join(cacheArchDirs(arch), ", "), arch)
	return FetchKernel(ctx, arch, dir, logf)
}

// kernelFlavour is Debian's kernel flavour for the arch: the arch itself,
// except armhf's multiplatform ARMv7 kernel (linux-image-armmp), which is
// what 32-bit ARM boards and QEMU's virt board boot.
func kernelFlavour(arch layout.Arch) string {
	if arch == layout.ARM {
		return "armmp"
	}
	return arch.DebianArch()
}

// kernelPackage picks the versioned kernel package out of `apt-cache
// depends linux-image-<flavour>:<debarch>`: the meta-package's
// "Depends: linux-image-6.1.0-41-amd64" (apt may add ":arm64" for a
// foreign arch). Following the meta-package means a security update on
// the mirror, which removes the old version, never breaks the fetch.
func kernelPackage(dependsOut, flavour string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(dependsOut))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || (f[0] != "Depends:" && f[0] != "|Depends:") {
			continue
		}
		pkg, _, _ := strings.Cut(f[1], ":")
		rest, ok := strings.CutPrefix(pkg, "linux-image-")
		if !ok || rest == "" || rest[0] < '0' || rest[0] > '9' || !strings.HasSuffix(rest, "-"+flavour) {
			continue
		}
		return pkg, true
	}
	return "", false
}

// lockDir takes an exclusive lock on dir/.lock for the fetch, so two
// builds that fetch at once do not interleave their writes.
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// needDebianTools says what a fetch needs when apt-get or dpkg-deb is not
// on this machine.
func needDebianTools() error {
	for _, t := range []string{"apt-cache", "apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("fetching Debian's packages needs %s (a Debian or Ubuntu build machine); elsewhere give --kernel, --modules, --e2fsck and --loader-file", t)
		}
	}
	return nil
}

// FetchKernel downloads Debian's current kernel for arch (the version the
// linux-image-<flavour> meta-package points at) with apt-get and installs
// its kernel and modules under cacheDir/<debarch>. A cut fetch leaves no
// release file, so the cache never offers half a kernel; an existing one is
// replaced only once the new one is unpacked.
func FetchKernel(ctx context.Context, arch layout.Arch, cacheDir string, logf func(string, ...any)) (CachedKernel, error) {
	if err := needDebianTools(); err != nil {
		return CachedKernel{}, err
	}
	debarch, flavour := arch.DebianArch(), kernelFlavour(arch)
	dir := filepath.Join(cacheDir, debarch)
	unlock, err := lockDir(dir)
	if err != nil {
		return CachedKernel{}, err
	}
	defer unlock()
	meta := "linux-image-" + flavour + ":" + debarch
	out, _ := exec.CommandContext(ctx, "apt-cache", "depends", meta).Output()
	pkg, ok := kernelPackage(string(out), flavour)
	if !ok {
		return CachedKernel{}, fmt.Errorf("fetch kernel: apt knows no %s; run (as root): dpkg --add-architecture %s && apt-get update", meta, debarch)
	}
	release := strings.TrimPrefix(pkg, "linux-image-")
	// Unpacked beside its destination (the same filesystem), so moving it
	// into place is a rename.
	tmp, err := os.MkdirTemp(dir, ".fetch-")
	if err != nil {
		return CachedKernel{}, err
	}
	defer os.RemoveAll(tmp)
	logf("fetch: downloading %s:%s", pkg, debarch)
	if err := runIn(ctx, tmp, "apt-get", "download", "-q", pkg+":"+debarch); err != nil {
		return CachedKernel{}, fmt.Errorf("fetch %s:%s: %w", pkg, debarch, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "linux-image-*.deb"))
	if len(debs) != 1 {
		return CachedKernel{}, fmt.Errorf("fetch %s: apt-get download left %d .deb files", pkg, len(debs))
	}
	x := filepath.Join(tmp, "x")
	if err := runIn(ctx, tmp, "dpkg-deb", "-x", debs[0], x); err != nil {
		return CachedKernel{}, err
	}
	kernel := filepath.Join(x, "boot", "vmlinuz-"+release)
	modules := filepath.Join(x, "lib", "modules", release)
	if _, err := os.Stat(modules); errors.Is(err, os.ErrNotExist) {
		modules = filepath.Join(x, "usr", "lib", "modules", release) // merged /usr
	}
	for _, p := range []string{kernel, modules} {
		if _, err := os.Stat(p); err != nil {
			return CachedKernel{}, fmt.Errorf("fetch %s: the package has no %s", pkg, strings.TrimPrefix(p, x))
		}
	}
	if _, err := CheckKernel(kernel, arch); err != nil {
		return CachedKernel{}, fmt.Errorf("fetch %s: %w", pkg, err)
	}
	// The release file goes first and comes back last: in between, the
	// cache has no kernel for the arch rather than a mixed one.
	if err := os.Remove(filepath.Join(dir, cacheRelease)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return CachedKernel{}, err
	}
	if err := os.Rename(kernel, filepath.Join(dir, cacheKernel)); err != nil {
		return CachedKernel{}, err
	}
	old := filepath.Join(tmp, "old-modules")
	if err := os.Rename(filepath.Join(dir, cacheModules), old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return CachedKernel{}, err
	}
	if err := os.Rename(modules, filepath.Join(dir, cacheModules)); err != nil {
		return CachedKernel{}, err
	}
	if err := writeFileAtomic(filepath.Join(dir, cacheRelease), []byte(release+"\n"), 0o644); err != nil {
		return CachedKernel{}, err
	}
	k, ok := readCachedKernel(dir)
	if !ok {
		return CachedKernel{}, fmt.Errorf("fetch %s: %s is incomplete after the fetch", pkg, dir)
	}
	logf("fetch: %s kernel %s in %s", arch, release, dir)
	return k, nil
}

// writeFileAtomic writes p under a temporary name and renames it.
func writeFileAtomic(p string, data []byte, mode os.FileMode) error {
	part := p + ".tmp" + fmt.Sprint(os.Getpid())
	if err := os.WriteFile(part, data, mode); err != nil {
		return err
	}
	if err := os.Rename(part, p); err != nil {
		os.Remove(part)
		return err
	}
	return nil
}

// Fetched is what Fetch put in (or found in) a kernel cache for one arch.
type Fetched struct {
	Kernel       CachedKernel
	E2fsck       string
	SystemdBoot  string // "" for arm (U-Boot)
	AlreadyThere bool   // nothing was downloaded
}

// Fetch brings Debian's kernel and modules, e2fsck-static and (for the
// UEFI arches) systemd-boot for arch into cacheDir/<debarch>, each only
// when it is not there yet.
func Fetch(ctx context.Context, arch layout.Arch, cacheDir string, logf func(string, ...any)) (Fetched, error) {
	dir := filepath.Join(cacheDir, arch.DebianArch())
	var f Fetched
	f.AlreadyThere = true
	k, ok := readCachedKernel(dir)
	if !ok {
		var err error
		if k, err = FetchKernel(ctx, arch, cacheDir, logf); err != nil {
			return f, err
		}
		f.AlreadyThere = false
	}
	f.Kernel = k
	// ensure downloads pkg with fetch unless have says it is there.
	ensure := func(pkg string, have bool, fetch func() error) error {
		if have {
			return nil
		}
		if err := needDebianTools(); err != nil {
			return err
		}
		logf("fetch: downloading %s:%s", pkg, arch.DebianArch())
		if err := fetch(); err != nil {
			return err
		}
		f.AlreadyThere = false
		return nil
	}
	f.E2fsck = filepath.Join(dir, cacheE2fsck)
	if err := ensure("e2fsck-static", CheckStatic(f.E2fsck, arch) == nil, func() error { return FetchE2fsck(ctx, arch, f.E2fsck) }); err != nil {
		return f, err
	}
	if arch.Supports(layout.LoaderUEFI) == nil {
		f.SystemdBoot = filepath.Join(dir, systemdBootName(arch))
		if err := ensure("systemd-boot-efi", CheckEFI("systemd-boot", f.SystemdBoot, arch) == nil, func() error { return FetchSystemdBoot(ctx, arch, f.SystemdBoot) }); err != nil {
			return f, err
		}
	}
	return f, nil
}
