package cli

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// Inputs that were silently ignored or taken for a default are refused
// before anything is built: extra positional arguments, an empty module
// name (it meant "the default list"), --slots 0.
func TestCommandLineRefusals(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"build extra argument", []string{"build", "--arch", "x86_64", "--rootfs", "r", "-o", "x.img", "extra.img"}, `ovroot build takes no arguments besides its flags, got ["extra.img"]`},
		{"build argument instead of -o", []string{"build", "--arch", "x86_64", "x.img"}, `got ["x.img"]`},
		{"initramfs extra argument", []string{"initramfs", "--arch", "x86_64", "-o", "i.img", "more"}, `ovroot initramfs takes no arguments`},
		{"demo extra argument", []string{"demo", "arm64"}, `ovroot demo takes no arguments`},
		{"empty --module", []string{"build", "--arch", "x86_64", "--module", "", "-o", "x.img"}, `invalid value "" for flag -module: empty name`},
		{"empty name in --module list", []string{"build", "--arch", "x86_64", "--module", "ext4,,overlay", "-o", "x.img"}, `empty name in "ext4,,overlay"`},
		{"--slots 0", []string{"build", "--arch", "x86_64", "--slots", "0", "-o", "x.img"}, "--slots 0 is not a number of root slots"},
		{"fetch extra argument", []string{"fetch", "arm64"}, `ovroot fetch takes no arguments`},
		{"fetch unknown arch", []string{"fetch", "--arch", "arm64,mips"}, `--arch: unknown arch "mips"`},
		{"version extra argument", []string{"version", "x"}, `ovroot version takes no arguments`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Chdir(t.TempDir()) // were one taken, it must not write here
			var out, errOut bytes.Buffer
			err := Context{Stdout: &out, Stderr: &errOut, Args: c.args}.Execute(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrUsage) {
				t.Errorf("ovroot %q = %v, want a usage error with %q", c.args, err, c.want)
			}
		})
	}
}

// ovroot run --arch naming another arch than the image's is refused,
// naming both, before QEMU starts.
func TestRunArch(t *testing.T) {
	for _, c := range []struct {
		flag, recorded, want, err string
	}{
		{"", "arm64", "arm64", ""},
		{"arm64", "arm64", "arm64", ""},
		{"aarch64", "arm64", "arm64", ""},
		{"x86_64", "arm64", "", "--arch x86_64, but disk.img is an arm64 image"},
		{"mips", "arm64", "", "--arch: "},
		{"arm", "", "arm", ""},
	} {
		got, err := runArch(c.flag, layout.Arch(c.recorded), "disk.img")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("runArch(%q, %q) = %q, %v; want an error with %q", c.flag, c.recorded, got, err, c.err)
			}
			continue
		}
		if err != nil || string(got) != c.want {
			t.Errorf("runArch(%q, %q) = %q, %v; want %q", c.flag, c.recorded, got, err, c.want)
		}
	}
}

// ovroot version (and --version) says what was built: the module version
// or (devel), and the Go that built it.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out bytes.Buffer
		if err := (Context{Stdout: &out, Stderr: &out, Args: args}).Execute(context.Background()); err != nil {
			t.Fatalf("ovroot %v: %v", args, err)
		}
		if got := out.String(); !strings.HasPrefix(got, "ovroot ") || !strings.Contains(got, runtime.Version()) {
			t.Errorf("ovroot %v = %q", args, got)
		}
	}
}
