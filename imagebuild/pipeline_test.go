package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
)

// An image without e2fsck is built, but said loudly, with what the device
// loses and how to fix it; "none" says so once; a named one must be static.
func TestImageE2fsck(t *testing.T) {
	static := staticBinary(t, layout.X86_64)
	dynamic := "/bin/ls"
	cases := []struct {
		name     string
		e2fsck   string
		find     error  // what the finder fails with; nil = finds static
		want     string // the path carried
		err      string
		warnings []string // substrings of the WARNING lines
		nWarn    int
	}{
		{"found", "", nil, static, "", nil, 0},
		{"none to be had", "", errors.New("apt-get: no network"), "", "", []string{"WITHOUT e2fsck: apt-get: no network", "boot VOLATILE", "ovroot fetch --arch x86_64", `e2fsck = "none"`}, 3},
		{"opted out", config.E2fsckNone, nil, "", "", []string{"cannot repair its data partition"}, 1},
		{"named, static", static, nil, static, "", nil, 0},
		{"named, dynamic", dynamic, nil, "", "dynamically linked", nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var lines []string
			logf := func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }
			called := false
			o := Options{FindE2fsck: func(ctx context.Context, a layout.Arch, _ func(string, ...any)) (string, error) {
				called = true
				return static, tc.find
			}}
			im := config.DefaultImage(layout.X86_64)
			im.E2fsck = tc.e2fsck
			got, err := imageE2fsck(context.Background(), im, o, logf)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "e2fsck") {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("imageE2fsck = %q, %v; want %q", got, err, tc.want)
			}
			if called != (tc.e2fsck == "") {
				t.Errorf("finder called = %v with e2fsck = %q", called, tc.e2fsck)
			}
			var warns []string
			for _, l := range lines {
				if strings.HasPrefix(l, "WARNING:") {
					warns = append(warns, l)
				}
			}
			if len(warns) != tc.nWarn {
				t.Errorf("%d WARNING lines, want %d:\n%s", len(warns), tc.nWarn, strings.Join(lines, "\n"))
			}
			all := strings.Join(warns, "\n")
			for _, w := range tc.warnings {
				if !strings.Contains(all, w) {
					t.Errorf("warnings lack %q:\n%s", w, all)
				}
			}
		})
	}
}

// FindE2fsck takes the first static one for the arch: the kernel cache,
// then ovroot's cache; a wrong one is skipped with a word.
func TestFindE2fsck(t *testing.T) {
	kc, oc := t.TempDir(), t.TempDir()
	t.Setenv("OVROOT_KERNEL_CACHE", kc)
	t.Setenv("OVROOT_CACHE", oc)
	put := func(p, src string) {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	good, wrongArch := staticBinary(t, layout.ARM64), staticBinary(t, layout.X86_64)
	put(filepath.Join(kc, "arm64", "e2fsck"), wrongArch)
	put(filepath.Join(oc, "kernels", "arm64", "e2fsck"), good)
	var lines []string
	got, err := FindE2fsck(context.Background(), layout.ARM64, func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) })
	if err != nil || got != filepath.Join(oc, "kernels", "arm64", "e2fsck") {
		t.Fatalf("FindE2fsck = %q, %v; want the one in ovroot's cache", got, err)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "ignoring "+filepath.Join(kc, "arm64", "e2fsck")) {
		t.Errorf("the wrong-arch e2fsck was skipped silently: %q", lines)
	}
	put(filepath.Join(kc, "arm64", "e2fsck"), good)
	if got, err := FindE2fsck(context.Background(), layout.ARM64, t.Logf); err != nil || got != filepath.Join(kc, "arm64", "e2fsck") {
		t.Errorf("FindE2fsck = %q, %v; want the kernel cache's first", got, err)
	}
}

// Trace names every step of a build once, in the order they run: the
// timeline make bench prints is made of them.
func TestBuildImageTrace(t *testing.T) {
	p := goodPieces(t)
	var steps []string
	o := Options{InitBinary: p.init, Trace: func(s string) { steps = append(steps, s) }}
	if _, err := BuildImage(context.Background(), p.im, filepath.Join(t.TempDir(), "disk.img"), o); err != nil {
		t.Fatal(err)
	}
	want := []string{"checks", "programs", "squashfs", "initramfs", "hash", "boot", "root", "sync", "rename"}
	if !reflect.DeepEqual(steps, want) {
		t.Errorf("trace steps %q, want %q", steps, want)
	}
}

// Only a two-slot image that fetches updates over the network carries
// ovrootctl's network code; [update] ca and allow_http imply it.
func TestDeviceSet(t *testing.T) {
	for _, c := range []struct {
		name  string
		slots int
		u     config.Update
		want  string
	}{
		{"one slot", 1, config.Update{}, "device-nonet"},
		{"two slots", 2, config.Update{}, "device-nonet"},
		{"network", 2, config.Update{Network: true}, "device"},
		{"ca", 2, config.Update{CA: "/etc/ca.pem"}, "device"},
		{"allow_http", 2, config.Update{AllowHTTP: true}, "device"},
	} {
		im := config.DefaultImage(layout.X86_64)
		im.Slots, im.Update = c.slots, c.u
		if got := deviceSet(im).Name; got != c.want {
			t.Errorf("%s: deviceSet = %s, want %s", c.name, got, c.want)
		}
	}
}
