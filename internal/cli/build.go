package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/initramfs"
	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/layout"
)

// imageFlags are the image.toml keys that can be given (or overridden) on
// the command line.
type imageFlags struct {
	file, arch, kernel, modulesDir, rootfs, cmdline, compression string
	dataSize, bootSize, rootSize                                 string
	modules                                                      stringList
	initBinary, e2fsck                                           string
	loader, loaderFile                                           string
	board                                                        string
	slots                                                        int
	noCtl, verity                                                bool
	signKey, releaseVersion                                      string
	trustedKeys                                                  stringList
	layers                                                       pathList

	// defaultKernel gives the kernel and modules of a spec that names
	// neither (nil: none, they are required).
	defaultKernel func(layout.Arch) (imagebuild.CachedKernel, error)
}

func (f *imageFlags) register(fs *flag.FlagSet) {
	d := config.DefaultImage(layout.X86_64)
	fs.StringVar(&f.file, "f", "", "image.toml `FILE` to read (flags override its keys)")
	fs.StringVar(&f.arch, "arch", "", "target architecture `ARCH`: "+layout.ArchNames+" (image.toml: arch)")
	fs.StringVar(&f.kernel, "kernel", "", "kernel image `FILE` (image.toml: kernel); default, with --modules also left out: Debian's current kernel for the arch, from the kernel cache or fetched into it (see ovroot fetch)")
	fs.StringVar(&f.modulesDir, "modules", "", "kernel modules tree `DIR`, lib/modules/<release> (image.toml: modules_dir); default: the default kernel's")
	fs.Var(&f.modules, "module", "`NAMES` of modules to carry, repeatable or comma-separated; replaces the default list (image.toml: modules; default for x86_64: "+strings.Join(d.Modules, ",")+")")
	fs.StringVar(&f.rootfs, "rootfs", "", "root filesystem `PATH`: a directory, a tarball, or a Docker/OCI image (OCI image layout directory, OCI archive, docker save tarball; the image for --arch is taken) (image.toml: rootfs; required)")
	fs.Var(&f.layers, "layer", "OCI layer tarball `FILE` to apply on top of the rootfs (whiteouts too), e.g. a device's ovrootctl backup; repeatable, applied in order; replaces the list (image.toml: layers)")
	fs.StringVar(&f.cmdline, "cmdline", "", "kernel command line `PARAMS` (image.toml: cmdline; default: console=<the arch's serial console> panic=-1)")
	fs.StringVar(&f.compression, "compression", "", "squashfs compression `ALGO`: gzip, xz, zstd, lz4 or lzo (image.toml: squashfs_compression; default "+d.Compression+")")
	fs.StringVar(&f.dataSize, "data-size", "", "data partition `SIZE`, e.g. 256MiB (image.toml: data_size; default "+d.DataSize.String()+")")
	fs.StringVar(&f.bootSize, "boot-size", "", "boot partition `SIZE` (image.toml: boot_size; default "+d.BootSize.String()+")")
	fs.StringVar(&f.rootSize, "root-size", "", "root partition `SIZE`, 0 = fit the squashfs (image.toml: root_size; default 0)")
	fs.StringVar(&f.initBinary, "init-binary", "", "prebuilt /init `FILE` for the arch (default: cmd/init compiled from the source built into ovroot)")
	fs.StringVar(&f.e2fsck, "e2fsck", "", "static e2fsck `FILE` for the arch, carried to repair the data partition; \"none\" = without (image.toml: e2fsck; default: Debian's e2fsck-static from the kernel cache or fetched)")
	fs.StringVar(&f.loader, "loader", "", "how firmware boots the image, `LOADER`: uefi, uboot or none (image.toml: [boot] loader; default uefi for x86_64 and arm64, uboot for arm)")
	fs.StringVar(&f.loaderFile, "loader-file", "", "UEFI loader `FILE` for the ESP (a vendor's systemd-boot, a signed shim) (image.toml: [boot] loader_file; default: Debian's systemd-boot from the kernel cache or fetched)")
	fs.IntVar(&f.slots, "slots", 0, "root slots `N`: 1, or 2 for A/B upgrades with update bundles (image.toml: slots; default 1)")
	fs.StringVar(&f.board, "board", "", "the hardware `NAME` the image is for; bundles for another board are refused (image.toml: board; default generic)")
	fs.StringVar(&f.signKey, "sign-key", "", "minisign secret key `FILE` that signs the update bundle (ovroot keygen) (image.toml: [update] sign_key)")
	fs.Var(&f.trustedKeys, "trusted-key", "public key `FILE` the image's devices trust for bundles, repeatable; replaces the list (image.toml: [update] trusted_keys)")
	fs.StringVar(&f.releaseVersion, "release-version", "", "release `VERSION` of this build, numbers separated by dots (e.g. 3 or 1.4.2); devices refuse bundles older than what they run (image.toml: [update] version; default 0)")
	fs.BoolVar(&f.verity, "verity", false, "append a dm-verity hash tree to the root; the init checks every block before it mounts it (image.toml: verity = true)")
	fs.BoolVar(&f.noCtl, "no-ctl", false, "do not add ovrootctl at "+imagebuild.CtlPath+" when the rootfs has none (image.toml: ctl = false)")
}

// image loads image.toml (if -f) and applies the flags over it.
func (f *imageFlags) image() (*config.Image, error) {
	var im *config.Image
	if f.file != "" {
		var err error
		if im, err = config.LoadImage(f.file); err != nil {
			return nil, err
		}
	}
	return f.apply(im)
}

// apply puts the flags over im (nil when no file was given) and validates
// the result: a flag gives the same image as the same key in the file.
func (f *imageFlags) apply(im *config.Image) (*config.Image, error) {
	if f.arch != "" {
		a, err := layout.ParseArch(f.arch)
		if err != nil {
			return nil, fmt.Errorf("--arch: %w", err)
		}
		if im == nil {
			im = config.DefaultImage(a)
		} else {
			// Defaults that depend on the arch follow the flag, and keys
			// the file left out get the arch's defaults.
			im.SetArch(a)
		}
	}
	if im == nil {
		return nil, fmt.Errorf("%w: give -f image.toml or --arch", ErrUsage)
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&im.Kernel, f.kernel)
	set(&im.ModulesDir, f.modulesDir)
	set(&im.Rootfs, f.rootfs)
	set(&im.Cmdline, f.cmdline)
	set(&im.Compression, f.compression)
	set(&im.E2fsck, f.e2fsck)
	set(&im.Boot.Loader, f.loader)
	set(&im.Boot.LoaderFile, f.loaderFile)
	set(&im.Board, f.board)
	set(&im.Update.SignKey, f.signKey)
	set(&im.Update.Version, f.releaseVersion)
	if len(f.trustedKeys) > 0 {
		im.Update.TrustedKeys = f.trustedKeys
	}
	if f.slots != 0 {
		im.Slots = f.slots
	}
	if f.noCtl {
		im.Ctl = false
	}
	if f.verity {
		im.Verity = true
	}
	if len(f.modules) > 0 {
		im.Modules = f.modules
	}
	if len(f.layers) > 0 {
		im.Layers = f.layers
	}
	for _, s := range []struct {
		flag string
		val  string
		dst  *config.Size
	}{{"--data-size", f.dataSize, &im.DataSize}, {"--boot-size", f.bootSize, &im.BootSize}, {"--root-size", f.rootSize, &im.RootSize}} {
		if s.val == "" {
			continue
		}
		n, err := config.ParseSize(s.val)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.flag, err)
		}
		*s.dst = n
	}
	if im.Kernel == "" && im.ModulesDir == "" && f.defaultKernel != nil && im.Arch.Valid() {
		// Every other key is checked first: a typo must not cost a
		// kernel download before it is reported.
		im.Kernel, im.ModulesDir = "(Debian's)", "(Debian's)"
		if err := im.Validate(); err != nil {
			return nil, err
		}
		k, err := f.defaultKernel(im.Arch)
		if err != nil {
			return nil, fmt.Errorf("no kernel given (--kernel and --modules, image.toml kernel and modules_dir), and Debian's could not be had: %w", err)
		}
		im.Kernel, im.ModulesDir = k.Kernel, k.Modules
	}
	if err := im.Validate(); err != nil {
		return nil, err
	}
	return im, nil
}

func runBuild(c Context, ctx context.Context, args []string) error {
	fs := c.flagSet("build", "[-f image.toml] [flags] -o disk.img",
		"ovroot build --arch arm64 --rootfs rootfs.tar.gz -o disk.img   (Debian's kernel, fetched once)\n  ovroot build --arch arm64 --kernel vmlinuz --modules lib/modules/6.1.0-56-arm64 --rootfs rootfs.tar.gz -o disk.img\n  docker save myapp:1 -o myapp.tar && ovroot build --arch arm64 --rootfs myapp.tar -o disk.img   (also an OCI layout directory or archive: the arm64 image of a multi-arch index)\n  ovroot build -f image.toml --layer router-backup.tar.gz -o disk.img   (a device's ovrootctl backup on top of the rootfs)")
	var f imageFlags
	f.register(fs)
	f.defaultKernel = c.defaultKernel(ctx)
	out := fs.String("o", "", "disk image `FILE` to write (required unless --update)")
	update := fs.String("update", "", "also write an update bundle of the root, kernel and initramfs to `FILE`, for ovrootctl upgrade (two-slot images)")
	trace := fs.Bool("trace", false, "print how long each step of the build took (trace: STEP N ms), for make bench's build timeline")
	start := time.Now()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("build", pos); err != nil {
		return err
	}
	slotsGiven := false
	fs.Visit(func(fl *flag.Flag) { slotsGiven = slotsGiven || fl.Name == "slots" })
	if slotsGiven && f.slots == 0 {
		return fmt.Errorf("%w: --slots 0 is not a number of root slots (1, or 2 for A/B updates)", ErrUsage)
	}
	if *out == "" && *update == "" {
		return fmt.Errorf("%w: -o disk.img is required", ErrUsage)
	}
	im, err := f.image()
	if err != nil {
		return err
	}
	if *update != "" && im.Slots != 2 {
		return fmt.Errorf("--update: an update bundle is for two-slot images: set slots = 2 (or --slots 2); this image has one root slot")
	}
	imageOut := *out
	if imageOut == "" {
		// Only the bundle was asked for: the image is made beside it and
		// dropped (it costs a GPT and a boot partition; the squashfs is
		// made once for both).
		dir, err := os.MkdirTemp(filepath.Dir(*update), ".ovroot-update-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		imageOut = filepath.Join(dir, "disk.img")
	}
	opts := imagebuild.Options{InitBinary: f.initBinary, Log: c.logf, Progress: c.terminal(), Bundle: *update, ImageDropped: *out == ""}
	if *trace {
		last := start
		c.logf("trace: %s %d ms", "start", 0)
		opts.Trace = func(step string) {
			now := time.Now()
			c.logf("trace: %s %d ms", step, now.Sub(last).Milliseconds())
			last = now
		}
	}
	res, err := imagebuild.BuildImage(ctx, im, imageOut, opts)
	if err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintf(c.Stdout, "update bundle %s: build %s, %d bytes (%s, board %s)\n", *update, res.BuildID, res.BundleBytes, im.Arch, res.Board)
		return nil
	}
	printSummary(c.Stdout, im, res)
	return nil
}

// defaultKernel finds (or fetches) Debian's kernel for a build that names
// none, and says which it took.
func (c Context) defaultKernel(ctx context.Context) func(layout.Arch) (imagebuild.CachedKernel, error) {
	return func(a layout.Arch) (imagebuild.CachedKernel, error) {
		k, err := imagebuild.DefaultKernel(ctx, a, c.logf)
		if err == nil {
			c.logf("kernel: none given; using Debian's %s from %s (give --kernel and --modules for another)", k.Release, k.Dir)
		}
		return k, err
	}
}

func (c Context) logf(format string, args ...any) {
	fmt.Fprintf(c.Stderr, "ovroot: "+format+"\n", args...)
}

func runInitramfs(c Context, ctx context.Context, args []string) error {
	fs := c.flagSet("initramfs", "--arch A [--modules DIR] [--module m,...] [--init-config init.toml] -o initrd.img",
		"ovroot initramfs --arch x86_64 --modules .cache/kernels/amd64/modules -o initrd.img")
	arch := fs.String("arch", "", "target architecture `ARCH`: "+layout.ArchNames+" (required)")
	modulesDir := fs.String("modules", "", "kernel modules tree `DIR`, lib/modules/<release> (default: no modules)")
	var modules stringList
	fs.Var(&modules, "module", "`NAMES` of modules to carry, repeatable or comma-separated (default with --modules: the image defaults for the arch)")
	initConfig := fs.String("init-config", "", "init config `FILE` (init.toml) to carry (default: built-in defaults)")
	initBinary := fs.String("init-binary", "", "prebuilt /init `FILE` (default: cmd/init compiled from the source built into ovroot)")
	out := fs.String("o", "", "`FILE` to write (required)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("initramfs", pos); err != nil {
		return err
	}
	if *arch == "" || *out == "" {
		return fmt.Errorf("%w: --arch and -o are required", ErrUsage)
	}
	a, err := layout.ParseArch(*arch)
	if err != nil {
		return fmt.Errorf("--arch: %w", err)
	}
	if len(modules) == 0 && *modulesDir != "" {
		modules = config.DefaultModules(a)
	}
	var cfg []byte
	if *initConfig != "" {
		data, err := os.ReadFile(*initConfig)
		if err != nil {
			return err
		}
		if _, err := config.ParseInit(*initConfig, data); err != nil {
			return err
		}
		cfg = data
	}
	if *initBinary == "" {
		progs, err := (&gobuild.Cache{Log: c.logf}).Programs(ctx, a, gobuild.DeviceNoNet)
		if err != nil {
			return err
		}
		*initBinary = filepath.Join(progs, "init")
	}
	w, err := os.Create(*out)
	if err != nil {
		return err
	}
	rep, err := initramfs.Build(ctx, initramfs.Options{Arch: a, InitBinary: *initBinary, ModulesDir: *modulesDir, Modules: modules, InitConfig: cfg}, w)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*out)
		return err
	}
	fmt.Fprintf(c.Stdout, "%s: %d bytes, modules in load order: %v\n", *out, rep.Bytes, rep.Modules)
	return nil
}
