package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/initramfs"
	"github.com/ovroot/ovroot/internal/eshell"
	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/internal/kmod"
	"github.com/ovroot/ovroot/internal/tmpdir"
	"github.com/ovroot/ovroot/layout"
)

// Options tune BuildImage beyond what image.toml says.
type Options struct {
	// InitBinary is a prebuilt /init for the arch; "" = cmd/init compiled
	// from the source built into ovroot.
	InitBinary string
	// InitConfig is carried as the init's config as it is; nil encodes
	// the image's [init] table (tests pass a broken one on purpose).
	InitConfig []byte
	// Log receives one line per phase, and warnings; nil is silent.
	Log func(format string, args ...any)
	// Progress is a terminal for status lines during long steps; nil
	// (a pipe, a log) keeps them quiet.
	Progress io.Writer
	// Trace, when set, is called at the end of each step (checks,
	// programs, then Build's steps: see Spec.Trace).
	Trace func(step string)
	// Programs compiles and caches the device programs; nil = the
	// default cache (gobuild.CacheDir) logging to Log.
	Programs *gobuild.Cache
	// FindE2fsck finds a static e2fsck for the arch when the image names
	// none; nil = FindE2fsck (the kernel cache, else fetched from Debian).
	FindE2fsck func(ctx context.Context, arch layout.Arch, logf func(string, ...any)) (string, error)
	// FindLoader finds the UEFI loader for the arch when the image names
	// no loader_file; nil = FindSystemdBoot.
	FindLoader func(ctx context.Context, arch layout.Arch, logf func(string, ...any)) (string, error)
	// InitramfsCache is the directory keeping built initramfs archives
	// by a hash of all they carry (see initrdCache); "" = "initramfs" in
	// gobuild.CacheDir(), "off" = build every time.
	InitramfsCache string
	// ModuleIndexCache is the directory keeping the module index of a
	// modules directory (see moduleIndexCache); "" = "modindex" in
	// gobuild.CacheDir(), "off" = read every module every time.
	ModuleIndexCache string
	// Bundle, when set, is where the update bundle of a two-slot image is
	// written too.
	Bundle string
	// ImageDropped says the image is made only for the bundle and removed
	// after it: its (temporary) path is not worth a log line.
	ImageDropped bool
}

// ImageResult summarizes BuildImage.
type ImageResult struct {
	*Result
	Path    string   // the image written
	Bytes   int64    // its size
	Modules []string // in load order
	E2fsck  string   // the e2fsck carried; "" = none
	Loader  layout.Loader
	// LoaderFile is the UEFI loader binary on the ESP; "" = none.
	LoaderFile string
	Ctl        string // what was done about ovrootctl
	Board      string // two-slot images
}

// CtlPath is where an image gets ovrootctl when its rootfs has none.
const CtlPath = "/usr/sbin/ovrootctl"

// ctlPaths are where a rootfs's own ovrootctl may be; any of them wins.
var ctlPaths = []string{"/usr/sbin/ovrootctl", "/usr/bin/ovrootctl", "/sbin/ovrootctl", "/bin/ovrootctl"}

// BuildImage is the host pipeline behind `ovroot build`: the device
// programs (compiled once per ovroot version and arch), the initramfs for
// im (init, modules, init config, e2fsck, emergency shell), then the disk
// image at out, with ovrootctl added to the root unless it has one.
func BuildImage(ctx context.Context, im *config.Image, out string, o Options) (*ImageResult, error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// Refused before anything is built: the image must not replace one of
	// its own inputs, or land inside the rootfs.
	if _, err := CheckOutput(out, append([]Input{{"image spec", im.File()}, {"kernel", im.Kernel}, {"modules directory", im.ModulesDir},
		{"rootfs", im.Rootfs}, {"e2fsck", e2fsckInput(im.E2fsck)}, {"init binary", o.InitBinary}, {"loader file", im.Boot.LoaderFile}}, append(layerInputs(im.Layers), stackInputs(im.Layer)...)...)); err != nil {
		return nil, err
	}
	if extra := extraModules(im); len(extra) > 0 {
		// A copy: the caller's image keeps the modules it named.
		mods := append([]string(nil), im.Modules...)
		for _, m := range extra {
			if !slices.Contains(mods, m) {
				mods = append(mods, m)
			}
		}
		cp := *im
		cp.Modules = mods
		im = &cp
	}
	mark := o.Trace
	if mark == nil {
		mark = func(string) {}
	}
	ix, err := checkPieces(ctx, im, o, logf)
	if err != nil {
		return nil, err
	}
	loaderFile, err := imageLoaderFile(ctx, im, o, logf)
	if err != nil {
		return nil, err
	}
	initCfg := o.InitConfig
	if initCfg == nil {
		var err error
		if initCfg, err = im.Init.Encode(); err != nil {
			return nil, err
		}
	}
	e2fsck, err := imageE2fsck(ctx, im, o, logf)
	if err != nil {
		return nil, err
	}
	mark("checks")
	var progs string // the directory of the compiled device programs
	if o.InitBinary == "" || im.EmergencyShell || im.Ctl {
		cache := o.Programs
		if cache == nil {
			cache = &gobuild.Cache{Log: logf}
		}
		if progs, err = cache.Programs(ctx, im.Arch, deviceSet(im)); err != nil {
			return nil, err
		}
	}
	mark("programs")
	initBin := o.InitBinary
	if initBin == "" {
		initBin = filepath.Join(progs, "init")
	}
	tmp, removeTmp, err := tmpdir.Make("build")
	if err != nil {
		return nil, err
	}
	defer removeTmp()
	initrd := filepath.Join(tmp, layout.InitrdFile)
	w, err := os.Create(initrd)
	if err != nil {
		return nil, err
	}
	var extra []initramfs.File
	if e2fsck != "" {
		extra = append(extra, initramfs.File{Path: layout.E2fsckPath, Source: e2fsck, Mode: 0o755})
	}
	if im.EmergencyShell {
		extra = append(extra, emergencyShell(progs, o.InitBinary != "")...)
	}
	var adds []Addition
	if im.Ctl {
		adds = append(adds, Addition{Path: CtlPath, Source: filepath.Join(progs, "ovrootctl"), Mode: 0o755, Unless: ctlPaths})
	}
	upd, signKey, warnings, err := updateFiles(im, tmp, o.Bundle != "")
	if err != nil {
		return nil, err
	}
	adds = append(adds, upd...)
	for _, w := range warnings {
		logf("%s", w)
	}
	// The initramfs is made while mksquashfs runs: neither needs the
	// other, and together they take about as long as the longer one.
	// Build waits for it (Pending) before it writes the boot partition.
	// A failed initramfs stops the squashfs too (bctx): no waiting for
	// mksquashfs to hear of an error it cannot change.
	bctx, cancel := context.WithCancel(ctx)
	cache := initrdCache{Dir: o.InitramfsCache, Keep: 8}
	switch cache.Dir {
	case "off":
		cache.Dir = ""
	case "":
		if d, err := gobuild.CacheDir(); err == nil {
			cache.Dir = filepath.Join(d, "initramfs")
		}
	}
	type built struct {
		rep *initramfs.Report
		err error
	}
	done := make(chan built, 1)
	go func() {
		t := time.Now()
		rep, hit, err := cache.build(bctx, initramfs.Options{
			Arch:       im.Arch,
			InitBinary: initBin,
			ModulesDir: im.ModulesDir,
			Modules:    im.Modules,
			InitConfig: initCfg,
			Files:      extra,
			Index:      ix,
		}, ix, w)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			err = fmt.Errorf("initramfs: %w", err)
			cancel()
		} else {
			from := "built alongside the squashfs"
			if hit {
				from = "from the cache " + cache.Dir
			}
			logf("initramfs: %d modules, %d bytes in %s (%s)", len(rep.Modules), rep.Bytes, time.Since(t).Round(time.Millisecond), from)
		}
		done <- built{rep, err}
	}()
	var (
		rep    *initramfs.Report
		ierr   error
		waited bool
	)
	wait := func() (string, error) {
		if !waited {
			b := <-done
			rep, ierr, waited = b.rep, b.err, true
		}
		if ierr != nil {
			return "", ierr
		}
		return rep.Release, nil
	}
	// On every return the initramfs is stopped and waited for before tmp
	// is removed.
	defer func() {
		cancel()
		if !waited {
			<-done
		}
	}()
	t := time.Now()
	res, err := Build(bctx, Spec{
		Arch:        im.Arch,
		Kernel:      im.Kernel,
		Initramfs:   initrd,
		Cmdline:     im.Cmdline,
		Loader:      im.Loader(),
		LoaderFile:  loaderFile,
		Rootfs:      im.Rootfs,
		Layers:      im.Layers,
		Compression: im.Compression,
		BootSize:    int64(im.BootSize),
		RootSize:    int64(im.RootSize),
		DataSize:    int64(im.DataSize),
		Slots:       im.Slots,
		Board:       im.Board,
		Tries:       im.Boot.Tries,
		Bundle:      o.Bundle,
		Version:     im.Update.ReleaseVersion(),
		Verity:      im.Verity,
		SignKey:     signKey,
		Pending:     wait,
		Add:         adds,
		Log:         logf,
		Progress:    o.Progress,
		Trace:       o.Trace,
		// The rootfs's init is checked in the tree mksquashfs packs: a
		// tarball or an image is not read a second time for it.
		Stack: im.Layer,
		CheckTree: func(dirs ...string) error {
			warnings, err := initWarningsIn(rootfsName(im), im.Init.Init, im.Arch, dirs...)
			for _, w := range warnings {
				logf("warning: %s", w)
			}
			return err
		},
	}, out)
	if err != nil {
		// The initramfs's own error when it is why the build stopped.
		cancel()
		if wait(); ierr != nil && ctx.Err() == nil && !errors.Is(ierr, context.Canceled) {
			return nil, ierr
		}
		return nil, fmt.Errorf("image: %w", err)
	}
	if o.ImageDropped {
		logf("image: made for the bundle only, not kept, in %s", time.Since(t).Round(time.Millisecond))
	} else {
		logf("image: %s in %s", out, time.Since(t).Round(time.Millisecond))
	}
	r := &ImageResult{Result: res, Path: out, Modules: rep.Modules, E2fsck: e2fsck, Ctl: "off (ctl = false)", Loader: im.Loader(), LoaderFile: loaderFile}
	if im.Slots == 2 {
		r.Board = im.Board
		if r.Board == "" {
			r.Board = DefaultBoard
		}
	}
	if im.Ctl {
		r.Ctl = adds[0].Note
	}
	if fi, err := os.Stat(out); err == nil {
		r.Bytes = fi.Size()
	}
	return r, nil
}

// imageLoaderFile decides the UEFI loader binary on the ESP: the one the
// image names (checked to be an EFI application for the arch), else
// systemd-boot found or fetched. Other loaders need none.
func imageLoaderFile(ctx context.Context, im *config.Image, o Options, logf func(string, ...any)) (string, error) {
	if im.Loader() != layout.LoaderUEFI {
		return "", nil
	}
	if im.Boot.LoaderFile != "" {
		if err := CheckEFI("boot.loader_file", im.Boot.LoaderFile, im.Arch); err != nil {
			return "", err
		}
		return im.Boot.LoaderFile, nil
	}
	find := o.FindLoader
	if find == nil {
		find = FindSystemdBoot
	}
	p, err := find(ctx, im.Arch, logf)
	if err != nil {
		return "", fmt.Errorf("loader uefi: %w", err)
	}
	logf("loader: uefi, %s as %s", p, im.Arch.EFIBootFile())
	return p, nil
}

// imageE2fsck decides the e2fsck the initramfs carries: the one the image
// names (checked to be static, for the arch), none when it says "none",
// else one found or fetched. An image without one cannot repair its data
// partition, which is said loudly.
func imageE2fsck(ctx context.Context, im *config.Image, o Options, logf func(string, ...any)) (string, error) {
	switch im.E2fsck {
	case config.E2fsckNone:
		logf("WARNING: e2fsck = %q: this image cannot repair its data partition; when it is damaged the device boots VOLATILE (changes lost at power-off)", config.E2fsckNone)
		return "", nil
	case "":
	default:
		if err := CheckStatic(im.E2fsck, im.Arch); err != nil {
			return "", fmt.Errorf("e2fsck: %w", err)
		}
		return im.E2fsck, nil
	}
	find := o.FindE2fsck
	if find == nil {
		find = FindE2fsck
	}
	p, err := find(ctx, im.Arch, logf)
	if err == nil {
		logf("e2fsck: carrying %s", p)
		return p, nil
	}
	logf("WARNING: building WITHOUT e2fsck: %v", err)
	logf("WARNING: the device cannot repair its data partition: a damaged one (a bad superblock after a power cut) makes it boot VOLATILE, every change lost at power-off, until someone reformats it.")
	logf("WARNING: fix: run `ovroot fetch --arch %s` (on a Debian or Ubuntu machine), or pass --e2fsck FILE (a static e2fsck for %s); or set e2fsck = %q (--e2fsck %s) to build without on purpose.",
		im.Arch, im.Arch, config.E2fsckNone, config.E2fsckNone)
	return "", nil
}

// checkPieces refuses pieces that cannot boot together (see check.go), and
// warns when the rootfs lacks the program the init will start.
// It returns the modules' index (nil without a modules directory), loaded
// once for the check and the initramfs.
func checkPieces(ctx context.Context, im *config.Image, o Options, logf func(string, ...any)) (*kmod.Index, error) {
	ki, err := CheckKernel(im.Kernel, im.Arch)
	if err != nil {
		return nil, err
	}
	var ix *kmod.Index
	if im.ModulesDir != "" {
		if ix, err = o.moduleIndexCache().load(im.ModulesDir); err != nil {
			return nil, err
		}
		if err := checkModules(ix, im.ModulesDir, im.Modules, im.Arch, ki.Release); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct{ what, path string }{{"init binary", o.InitBinary}, {"e2fsck", im.E2fsck}} {
		if f.path != "" && !(f.what == "e2fsck" && f.path == config.E2fsckNone) {
			if err := checkStaticFile(f.what, f.path, im.Arch); err != nil {
				return nil, err
			}
		}
	}
	return ix, nil
}

// deviceSet is the device programs an image carries: ovrootctl with the
// network code only when the image fetches updates over the network.
func deviceSet(im *config.Image) gobuild.Set {
	if im.Slots == 2 && im.Update.NetworkUpdates() {
		return gobuild.Device
	}
	return gobuild.DeviceNoNet
}

// moduleIndexCache is the module index cache o asks for.
func (o Options) moduleIndexCache() moduleIndexCache {
	c := moduleIndexCache{Dir: o.ModuleIndexCache, Keep: 8}
	switch c.Dir {
	case "off":
		c.Dir = ""
	case "":
		if d, err := gobuild.CacheDir(); err == nil {
			c.Dir = filepath.Join(d, "modindex")
		}
	}
	return c
}

// emergencyShell lists the shell's files: /bin/sh and its commands (ls,
// cat, dmesg, mount, umount) are links to /init, which runs the one its
// name says (package eshell), so they cost no second Go runtime. With a
// prebuilt init (--init-binary), which may not be ovroot's, they link to
// a copy of the compiled init at /bin/ovroot-shell instead.
func emergencyShell(progs string, prebuiltInit bool) []initramfs.File {
	var files []initramfs.File
	target := "/init"
	if prebuiltInit {
		target = "/bin/ovroot-shell"
		files = append(files, initramfs.File{Path: target, Source: filepath.Join(progs, "init"), Mode: 0o755})
	}
	for _, name := range eshell.Names() {
		files = append(files, initramfs.File{Path: "/bin/" + name, Link: target})
	}
	return files
}

// e2fsckInput is the e2fsck file the image names ("" for none).
func e2fsckInput(p string) string {
	if p == config.E2fsckNone {
		return ""
	}
	return p
}
