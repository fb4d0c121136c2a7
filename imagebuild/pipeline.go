package imagebuild

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/initramfs"
	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/layout"
)

// Options tune BuildImage beyond what image.toml says.
type Options struct {
	// InitBinary is a prebuilt /init for the arch; "" builds cmd/init.
	InitBinary string
	// InitConfig is carried as the init's config as it is; nil encodes
	// the image's [init] table (tests pass a broken one on purpose).
	InitConfig []byte
	// Log receives one line per phase; nil is silent.
	Log func(format string, args ...any)
}

// ImageResult summarizes BuildImage.
type ImageResult struct {
	*Result
	Modules []string // in load order
}

// BuildImage is the host pipeline behind `ovroot build`: the initramfs for
// im (init, modules, init config, e2fsck, emergency shell), then the disk
// image at out.
func BuildImage(ctx context.Context, im *config.Image, out string, o Options) (*ImageResult, error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// Refused before anything is built: the image must not replace one of
	// its own inputs, or land inside the rootfs.
	if _, err := CheckOutput(out, []Input{{"image spec", im.File()}, {"kernel", im.Kernel}, {"modules directory", im.ModulesDir},
		{"rootfs", im.Rootfs}, {"e2fsck", im.E2fsck}, {"init binary", o.InitBinary}}); err != nil {
		return nil, err
	}
	if err := checkPieces(ctx, im, o, logf); err != nil {
		return nil, err
	}
	initCfg := o.InitConfig
	if initCfg == nil {
		var err error
		if initCfg, err = im.Init.Encode(); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp("", "ovroot-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, layout.InitrdFile)
	w, err := os.Create(initrd)
	if err != nil {
		return nil, err
	}
	var extra []initramfs.File
	if im.E2fsck != "" {
		extra = append(extra, initramfs.File{Path: layout.E2fsckPath, Source: im.E2fsck, Mode: 0o755})
	}
	if im.EmergencyShell {
		files, err := buildEmergencyShell(ctx, im.Arch, filepath.Join(tmp, "shell"))
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("emergency shell: %w", err)
		}
		extra = append(extra, files...)
	}
	t := time.Now()
	rep, err := initramfs.Build(ctx, initramfs.Options{
		Arch:       im.Arch,
		InitBinary: o.InitBinary,
		ModulesDir: im.ModulesDir,
		Modules:    im.Modules,
		InitConfig: initCfg,
		Files:      extra,
	}, w)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	logf("initramfs: %d modules, %d bytes in %s", len(rep.Modules), rep.Bytes, time.Since(t).Round(time.Millisecond))
	t = time.Now()
	res, err := Build(ctx, Spec{
		Arch:          im.Arch,
		Kernel:        im.Kernel,
		Initramfs:     initrd,
		Cmdline:       im.Cmdline,
		Rootfs:        im.Rootfs,
		Compression:   im.Compression,
		BootSize:      int64(im.BootSize),
		RootSize:      int64(im.RootSize),
		DataSize:      int64(im.DataSize),
		KernelRelease: rep.Release,
		Log:           logf,
	}, out)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	logf("image: %s in %s", out, time.Since(t).Round(time.Millisecond))
	return &ImageResult{Result: res, Modules: rep.Modules}, nil
}

// checkPieces refuses pieces that cannot boot together (see check.go), and
// warns when the rootfs lacks the program the init will start.
func checkPieces(ctx context.Context, im *config.Image, o Options, logf func(string, ...any)) error {
	ki, err := CheckKernel(im.Kernel, im.Arch)
	if err != nil {
		return err
	}
	if err := CheckModules(im.ModulesDir, im.Modules, im.Arch, ki.Release); err != nil {
		return err
	}
	for _, f := range []struct{ what, path string }{{"init binary", o.InitBinary}, {"e2fsck", im.E2fsck}} {
		if f.path != "" {
			if err := checkStaticFile(f.what, f.path, im.Arch); err != nil {
				return err
			}
		}
	}
	if has, err := RootfsHas(ctx, im.Rootfs, im.Init.Init); err != nil {
		return err
	} else if !has {
		logf("warning: rootfs %s has no %s ([init] init): the device will have no program to start after the root is ready", im.Rootfs, im.Init.Init)
	}
	return nil
}

// emergencyCommands are carried in /bin of the initramfs when
// emergency_shell is on: a shell, and enough to look around. The shell is
// u-root's rush, which reads plain lines: gosh's full-screen editor queries
// the terminal and waits for answers a serial console may never send.
var emergencyCommands = []string{"exp/rush", "core/ls", "core/cat", "core/dmesg", "core/mount"}

// buildEmergencyShell cross-compiles u-root's rush and a few commands.
func buildEmergencyShell(ctx context.Context, arch layout.Arch, dir string) ([]initramfs.File, error) {
	src, err := gobuild.FindSource(".")
	if err != nil {
		return nil, err
	}
	var pkgs []string
	for _, c := range emergencyCommands {
		pkgs = append(pkgs, "github.com/u-root/u-root/cmds/"+c)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := gobuild.Build(ctx, arch, src, dir+"/", pkgs...); err != nil {
		return nil, err
	}
	var files []initramfs.File
	for _, c := range emergencyCommands {
		bin := path.Base(c)
		name := "/bin/" + bin
		if bin == "rush" {
			name = "/bin/sh"
		}
		files = append(files, initramfs.File{Path: name, Source: filepath.Join(dir, bin), Mode: 0o755})
	}
	return files, nil
}
