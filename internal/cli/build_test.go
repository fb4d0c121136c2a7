package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/config"
)

// view is the part of an image spec a build uses, comparable as a string.
func view(im *config.Image) string {
	return fmt.Sprintf("arch=%s kernel=%s modules_dir=%s modules=%v rootfs=%s layers=%q cmdline=%q comp=%s boot=%s root=%s data=%s e2fsck=%s shell=%v init=%+v boot=%+v loader=%s",
		im.Arch, im.Kernel, im.ModulesDir, im.Modules, im.Rootfs, im.Layers, im.Cmdline, im.Compression,
		im.BootSize, im.RootSize, im.DataSize, im.E2fsck, im.EmergencyShell, im.Init, im.Boot, im.Loader())
}

// specFrom applies command-line args (flags of ovroot build) over an
// image.toml holding text ("" for no file).
func specFrom(t *testing.T, text string, args ...string) (*config.Image, error) {
	t.Helper()
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	var f imageFlags
	f.register(fs)
	if text != "" {
		p := filepath.Join(t.TempDir(), "image.toml")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"-f", p}, args...)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f.image()
}

// A flag gives the image the same key in image.toml would: --arch over a
// file without arch brings the arch's default modules and cmdline, and a
// flag overrides the file's key.
func TestFlagsOverFile(t *testing.T) {
	paths := "kernel = \"/k/vmlinuz\"\nmodules_dir = \"/m\"\nrootfs = \"/r.tar\"\n"
	cases := []struct {
		name       string
		file       string
		args       []string
		sameAsFile string // the file that must give the same spec, without flags
	}{
		{"--arch over a partial file (x86_64)", paths, []string{"--arch", "x86_64"}, "arch = \"x86_64\"\n" + paths},
		{"--arch over a partial file (arm64)", paths, []string{"--arch", "aarch64"}, "arch = \"arm64\"\n" + paths},
		{"--arch replaces the file's arch and its default cmdline", "arch = \"x86_64\"\n" + paths, []string{"--arch", "arm64"}, "arch = \"arm64\"\n" + paths},
		{"--arch armhf is 32-bit arm", "arch = \"x86_64\"\n" + paths, []string{"--arch", "armhf"}, "arch = \"arm\"\n" + paths},
		{"--arch keeps a cmdline the file sets", "arch = \"x86_64\"\ncmdline = \"quiet\"\n" + paths, []string{"--arch", "arm64"},
			"arch = \"arm64\"\ncmdline = \"quiet\"\n" + paths},
		{"--arch keeps modules the file sets", "modules = [\"ext4\"]\n" + paths, []string{"--arch", "arm64"},
			"arch = \"arm64\"\nmodules = [\"ext4\"]\n" + paths},
		{"flags override keys", "arch = \"x86_64\"\ndata_size = \"1GiB\"\ncmdline = \"quiet\"\nmodules = [\"ext4\"]\n" + paths,
			[]string{"--data-size", "512MiB", "--cmdline", "console=ttyS0", "--module", "squashfs,overlay", "--rootfs", "/other.tar"},
			"arch = \"x86_64\"\ndata_size = \"512MiB\"\ncmdline = \"console=ttyS0\"\nmodules = [\"squashfs\", \"overlay\"]\n" +
				"kernel = \"/k/vmlinuz\"\nmodules_dir = \"/m\"\nrootfs = \"/other.tar\"\n"},
		{"--loader and --loader-file over [boot]", "arch = \"arm64\"\n" + paths + "[boot]\nloader = \"uboot\"\n",
			[]string{"--loader", "uefi", "--loader-file", "/shim.efi"},
			"arch = \"arm64\"\n" + paths + "[boot]\nloader = \"uefi\"\nloader_file = \"/shim.efi\"\n"},
		{"--layer replaces layers, in order", "arch = \"arm64\"\n" + paths + "layers = [\"/site.tar\"]\n",
			[]string{"--layer", "/backup,1.tar.gz", "--layer", "/fix.tar"},
			"arch = \"arm64\"\n" + paths + "layers = [\"/backup,1.tar.gz\", \"/fix.tar\"]\n"},
		{"flags alone equal a full file", "", []string{"--arch", "arm64", "--kernel", "/k/vmlinuz", "--modules", "/m", "--rootfs", "/r.tar"},
			"arch = \"arm64\"\n" + paths},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := specFrom(t, c.file, c.args...)
			if err != nil {
				t.Fatal(err)
			}
			want, err := specFrom(t, c.sameAsFile)
			if err != nil {
				t.Fatal(err)
			}
			if view(got) != view(want) {
				t.Errorf("flags over the file give\n  %s\nthe same keys in the file give\n  %s", view(got), view(want))
			}
			if len(got.Modules) == 0 {
				t.Error("no modules: the image cannot find its disk")
			}
		})
	}
}

func TestFlagsErrors(t *testing.T) {
	paths := "kernel = \"/k/vmlinuz\"\nmodules_dir = \"/m\"\nrootfs = \"/r.tar\"\n"
	for _, c := range []struct {
		name, file string
		args       []string
		want       string
	}{
		{"no file, no arch", "", []string{"--kernel", "/k"}, "give -f image.toml or --arch"},
		{"bad arch", paths, []string{"--arch", "mips"}, "--arch"},
		{"bad size", "arch = \"x86_64\"\n" + paths, []string{"--data-size", "lots"}, "--data-size"},
		{"uboot on x86_64", paths, []string{"--arch", "x86_64", "--loader", "uboot"}, "boot.loader: uboot does not boot x86_64"},
		{"unknown loader", paths, []string{"--arch", "arm64", "--loader", "grub"}, "unknown loader \"grub\""},
		{"absurd size", "arch = \"x86_64\"\n" + paths, []string{"--data-size", "10TiB"}, "data_size: 10TiB is larger than ovroot builds (at most 64GiB"},
		{"newline in --cmdline", "arch = \"x86_64\"\n" + paths, []string{"--cmdline", "console=ttyS0\npanic=-1"}, "cmdline: control character '\\n' at byte 13"},
		{"--cmdline too long", "arch = \"arm\"\n" + paths, []string{"--cmdline", strings.Repeat("x", 2000)}, "cmdline: 2000 bytes, more than the 895"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := specFrom(t, c.file, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one saying %q", err, c.want)
			}
			if c.name == "no file, no arch" && !errors.Is(err, ErrUsage) {
				t.Errorf("%v is not a usage error", err)
			}
		})
	}
}

// A build that names neither kernel nor modules takes Debian's kernel
// from the kernel cache and says which; naming one of the two still needs
// the other; with no cached kernel and no apt the error says what to give.
func TestBuildDefaultKernel(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("OVROOT_KERNEL_CACHE", cache)
	t.Setenv("OVROOT_CACHE", t.TempDir())
	t.Setenv("PATH", t.TempDir()) // no apt-get: nothing is fetched
	t.Chdir(t.TempDir())
	spec := func(args ...string) (*config.Image, string, error) {
		fs := flag.NewFlagSet("build", flag.ContinueOnError)
		var f imageFlags
		f.register(fs)
		var errOut bytes.Buffer
		f.defaultKernel = Context{Stderr: &errOut}.defaultKernel(context.Background())
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		im, err := f.image()
		return im, errOut.String(), err
	}
	_, _, err := spec("--arch", "arm64", "--rootfs", "r")
	if err == nil || !strings.Contains(err.Error(), "no kernel given (--kernel and --modules") || !strings.Contains(err.Error(), "needs apt-cache") {
		t.Errorf("no kernel anywhere: %v", err)
	}
	// A mistake in another key is reported before any kernel is fetched.
	if _, _, err := spec("--arch", "arm64", "--rootfs", "r", "--slots", "2", "--release-version", "v1"); err == nil || !strings.Contains(err.Error(), "update.version") || strings.Contains(err.Error(), "no kernel given") {
		t.Errorf("a bad version with no kernel: %v, want the version named, not a fetch", err)
	}
	dir := filepath.Join(cache, "arm64")
	os.MkdirAll(filepath.Join(dir, "modules"), 0o755)
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("Image"), 0o644)
	os.WriteFile(filepath.Join(dir, "release"), []byte("6.1.0-41-arm64\n"), 0o644)
	im, log, err := spec("--arch", "arm64", "--rootfs", "r")
	if err != nil || im.Kernel != filepath.Join(dir, "vmlinuz") || im.ModulesDir != filepath.Join(dir, "modules") {
		t.Fatalf("default kernel: %v, kernel %q modules %q", err, im.Kernel, im.ModulesDir)
	}
	if !strings.Contains(log, "using Debian's 6.1.0-41-arm64 from "+dir) {
		t.Errorf("the build did not say which kernel it took: %q", log)
	}
	if _, _, err := spec("--arch", "arm64", "--rootfs", "r", "--kernel", "/k"); err == nil || !strings.Contains(err.Error(), "modules_dir: required key missing") {
		t.Errorf("--kernel without --modules: %v", err)
	}
	if _, _, err := spec("--arch", "x86_64", "--rootfs", "r"); err == nil || !strings.Contains(err.Error(), "no kernel given") {
		t.Errorf("arm64's kernel taken for x86_64: %v", err)
	}
}
