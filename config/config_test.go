package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/layout"
)

func TestParseImageGood(t *testing.T) {
	src := `# a device image
arch = "aarch64"          # alias of arm64
kernel = "k/vmlinuz"
modules_dir = "k/modules"
modules = ["virtio_blk", "squashfs"]
rootfs = "root.tar.gz"
layers = ["site.tar", "/abs/backup.tar.gz"]
cmdline = "console=ttyAMA0 quiet"
squashfs_compression = "xz"
boot_size = "64MiB"
data_size = 536870912

[init]
device_timeout = "30s"
data_label = "data"
`
	dir := t.TempDir()
	path := filepath.Join(dir, "image.toml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := LoadImage(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Validate(); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"arch", im.Arch, layout.ARM64},
		{"kernel", im.Kernel, filepath.Join(dir, "k/vmlinuz")},
		{"modules_dir", im.ModulesDir, filepath.Join(dir, "k/modules")},
		{"rootfs", im.Rootfs, filepath.Join(dir, "root.tar.gz")},
		{"layers", strings.Join(im.Layers, ","), filepath.Join(dir, "site.tar") + ",/abs/backup.tar.gz"},
		{"modules", strings.Join(im.Modules, ","), "virtio_blk,squashfs"},
		{"cmdline", im.Cmdline, "console=ttyAMA0 quiet"},
		{"compression", im.Compression, "xz"},
		{"boot_size", im.BootSize, Size(64 << 20)},
		{"data_size", im.DataSize, Size(512 << 20)},
		{"init.device_timeout", im.Init.DeviceTimeout.D(), 30 * time.Second},
		{"init.data_label", im.Init.DataLabel, "data"},
		{"init.root_label (default)", im.Init.RootLabel, layout.RootLabel},
		{"init.init (default)", im.Init.Init, "/sbin/init"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// ctl = false and e2fsck = "none" are kept as written: "none" is not a
// path to resolve against the file's directory.
func TestParseImageOptOuts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "image.toml")
	src := "arch = \"arm64\"\nkernel=\"/k\"\nmodules_dir=\"/m\"\nrootfs=\"/r\"\nctl = false\ne2fsck = \"none\"\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := LoadImage(path)
	if err != nil {
		t.Fatal(err)
	}
	if im.Ctl {
		t.Errorf("ctl = false gave Ctl = true")
	}
	if im.E2fsck != E2fsckNone {
		t.Errorf("e2fsck = \"none\" gave %q, want %q", im.E2fsck, E2fsckNone)
	}
	if _, err := ParseImage("image.toml", []byte("arch = \"arm64\"\nctl = \"no\"\n")); err == nil || !strings.Contains(err.Error(), "ctl") {
		t.Errorf("ctl = \"no\": err = %v, want one naming ctl", err)
	}
}

func TestParseImageDefaults(t *testing.T) {
	im, err := ParseImage("image.toml", []byte("arch = \"x86_64\"\nkernel=\"/k\"\nmodules_dir=\"/m\"\nrootfs=\"/r\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Validate(); err != nil {
		t.Fatal(err)
	}
	if im.Cmdline != "console=ttyS0 panic=-1" {
		t.Errorf("default cmdline = %q", im.Cmdline)
	}
	if strings.Join(im.Modules, ",") != strings.Join(DefaultModules(layout.X86_64), ",") {
		t.Errorf("default modules = %v", im.Modules)
	}
	if im.Compression != "gzip" || im.BootSize != 128<<20 || im.DataSize != 256<<20 || im.RootSize != 0 {
		t.Errorf("defaults: %+v", im)
	}
	if !im.Ctl || im.E2fsck != "" {
		t.Errorf("defaults: ctl = %v, e2fsck = %q; want true, \"\" (found by ovroot build)", im.Ctl, im.E2fsck)
	}
	// An explicitly empty module list is kept empty (a kernel with
	// everything built in), not replaced by the defaults.
	im, err = ParseImage("image.toml", []byte("arch = \"x86_64\"\nmodules = []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if im.Modules == nil || len(im.Modules) != 0 {
		t.Errorf("modules = [] gave %#v", im.Modules)
	}
	// Debian's name for 32-bit ARM is accepted and gets arm's console.
	im, err = ParseImage("image.toml", []byte("arch = \"armhf\"\nkernel=\"/k\"\nmodules_dir=\"/m\"\nrootfs=\"/r\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if im.Arch != layout.ARM || im.Cmdline != "console=ttyAMA0 panic=-1" {
		t.Errorf("arch = \"armhf\": arch %q, cmdline %q; want arm, console=ttyAMA0 panic=-1", im.Arch, im.Cmdline)
	}
}

// Every bad file names the file, the line and the key.
func TestParseImageBad(t *testing.T) {
	base := "kernel = \"/k\"\nmodules_dir = \"/m\"\nrootfs = \"/r\"\n"
	cases := []struct {
		name     string
		src      string
		line     int
		key      string
		contains string
	}{
		{"unknown key", "arch = \"x86_64\"\n" + base + "dat_size = \"1GiB\"\n", 5, "dat_size", "did you mean data_size"},
		{"unknown init key", "arch = \"x86_64\"\n" + base + "[init]\nroot_lable = \"x\"\n", 6, "init.root_lable", "did you mean init.root_label"},
		{"bad arch", base + "\narch = \"mips\"\n", 5, "arch", "mips"},
		{"bad arch lists every arch", base + "\narch = \"armel\"\n", 5, "arch", "x86_64, arm64 or arm"},
		{"bad size", "arch = \"x86_64\"\n" + base + "data_size = \"12 parsecs\"\n", 5, "data_size", "invalid size"},
		{"negative size", "arch = \"x86_64\"\n" + base + "boot_size = -5\n", 5, "boot_size", "negative"},
		{"wrong type", "arch = \"x86_64\"\n" + base + "modules = \"ext4\"\n", 5, "modules", ""},
		{"syntax", "arch = \"x86_64\"\nkernel = \"/k\n", 2, "kernel", ""},
		{"bad duration", "arch = \"x86_64\"\n" + base + "[init]\n\ndevice_timeout = \"soon\"\n", 7, "init.device_timeout", "invalid duration"},
		{"missing arch", base, 0, "arch", "required key missing (x86_64, arm64 or arm)"},
		{"missing rootfs", "arch = \"arm64\"\nkernel = \"/k\"\nmodules_dir = \"/m\"\n", 0, "rootfs", "required"},
		{"bad compression", "arch = \"x86_64\"\n" + base + "squashfs_compression = \"rar\"\n", 5, "squashfs_compression", "rar"},
		{"data too large", "arch = \"x86_64\"\n" + base + "data_size = \"10TiB\"\n", 5, "data_size", "at most 64GiB"},
		{"root too large", "arch = \"x86_64\"\n" + base + "root_size = \"65GiB\"\n", 5, "root_size", "at most 64GiB"},
		{"boot too large", "arch = \"x86_64\"\n" + base + "boot_size = \"5GiB\"\n", 5, "boot_size", "at most 4GiB"},
		{"boot too small", "arch = \"x86_64\"\n" + base + "boot_size = \"8MiB\"\n", 5, "boot_size", "too small"},
		{"bad module name", "arch = \"x86_64\"\n" + base + "modules = [\n  \"ext4\",\n  \"a/b\",\n]\n", 5, "modules", "entry 2"},
		{"same labels", "arch = \"x86_64\"\n" + base + "[init]\nroot_label = \"x\"\ndata_label = \"x\"\n", 7, "init.data_label", "must differ"},
		{"relative init", "arch = \"x86_64\"\n" + base + "[init]\ninit = \"sbin/init\"\n", 6, "init.init", "absolute"},
		{"relative keep", "arch = \"x86_64\"\n" + base + "[init.reset]\nkeep = [\"/etc/x\", \"etc/y\"]\n", 6, "init.reset.keep", "etc/y"},
		{"unknown key name", "arch = \"x86_64\"\n" + base + "[init.reset]\nbutton_key = \"KEY_BANANA\"\n", 6, "init.reset.button_key", "unknown key"},
		{"hold past window", "arch = \"x86_64\"\n" + base + "[init.reset]\nbutton_window = \"1s\"\nbutton_hold = \"3s\"\n", 7, "init.reset.button_hold", "longer than button_window"},
		{"reset typo", "arch = \"x86_64\"\n" + base + "[init.reset]\nkeeps = []\n", 6, "init.reset.keeps", "did you mean init.reset.keep"},
		{"unknown loader", "arch = \"x86_64\"\n" + base + "[boot]\nloader = \"grub\"\n", 6, "boot.loader", "want uefi, uboot or none"},
		{"uboot on x86_64", "arch = \"x86_64\"\n" + base + "[boot]\nloader = \"uboot\"\n", 6, "boot.loader", "use uefi"},
		{"loader file without uefi", "arch = \"arm64\"\n" + base + "[boot]\nloader = \"uboot\"\nloader_file = \"/shim.efi\"\n", 7, "boot.loader_file", "boots through uboot"},
		{"slots without a counting loader", "arch = \"arm64\"\n" + base + "slots = 2\n[boot]\nloader = \"none\"\n", 5, "slots", "uefi or uboot"},
		{"three slots", "arch = \"arm64\"\n" + base + "slots = 3\n", 5, "slots", "not 1 or 2"},
		{"too many tries", "arch = \"arm64\"\n" + base + "slots = 2\n[boot]\ntries = 100\n", 7, "boot.tries", "out of range"},
		{"loader typo", "arch = \"arm64\"\n" + base + "[boot]\nloadr = \"uefi\"\n", 6, "boot.loadr", "did you mean boot.loader"},
		{"zero timeout", "arch = \"x86_64\"\n" + base + "[init]\ndevice_timeout = \"0s\"\n", 6, "init.device_timeout", "out of range"},
		{"health timeout too short", "arch = \"x86_64\"\n" + base + "[init]\nhealth_timeout = \"10ms\"\n", 6, "init.health_timeout", "out of range"},
		{"health failure unknown", "arch = \"x86_64\"\n" + base + "[init]\nhealth_failure = \"panic\"\n", 6, "init.health_failure", "not one of reboot, wait"},
		{"version with a v", "arch = \"arm64\"\n" + base + "slots = 2\n[update]\nversion = \"v1.2\"\n", 7, "update.version", `"v1" is not a number`},
		{"version as a number", "arch = \"arm64\"\n" + base + "slots = 2\n[update]\nversion = 3\n", 7, "update.version", ""},
		{"update on one slot", "arch = \"arm64\"\n" + base + "[update]\nsign_key = \"k.key\"\n", 5, "update", "two-slot images"},
		{"empty layer", "arch = \"arm64\"\n" + base + "layers = [\"a.tar\", \" \"]\n", 5, "layers", "entry 2 is empty"},
		{"empty trusted key", "arch = \"arm64\"\n" + base + "slots = 2\n[update]\ntrusted_keys = [\"a.pub\", \"\"]\n", 7, "update.trusted_keys", "entry 2 is empty"},
		{"relative ca", "arch = \"arm64\"\n" + base + "slots = 2\n[update]\nca = \"etc/ca.pem\"\n", 7, "update.ca", "not a clean absolute path"},
		{"ca on one slot", "arch = \"arm64\"\n" + base + "[update]\nca = \"/etc/ca.pem\"\n", 5, "update", "two-slot images"},
		{"allow_http on one slot", "arch = \"arm64\"\n" + base + "[update]\nallow_http = true\n", 5, "update", "two-slot images"},
		{"network on one slot", "arch = \"arm64\"\n" + base + "[update]\nnetwork = true\n", 5, "update", "two-slot images"},
		{"update typo", "arch = \"arm64\"\n" + base + "slots = 2\n[update]\nsign_kye = \"k\"\n", 7, "update.sign_kye", "did you mean update.sign_key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im, err := ParseImage("spec/image.toml", []byte(c.src))
			if err == nil {
				err = im.Validate()
			}
			if err == nil {
				t.Fatal("no error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%v: not a *config.Error", err)
			}
			if e.File != "spec/image.toml" || e.Line != c.line || e.Key != c.key {
				t.Errorf("got file %q line %d key %q, want spec/image.toml line %d key %q (%v)", e.File, e.Line, e.Key, c.line, c.key, err)
			}
			if !strings.Contains(err.Error(), c.contains) {
				t.Errorf("%q does not mention %q", err, c.contains)
			}
			want := "spec/image.toml:"
			if c.line == 0 {
				want = "spec/image.toml: "
			}
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("%q does not start with %q", err, want)
			}
		})
	}
}

func TestParseInit(t *testing.T) {
	c, err := ParseInit("init.toml", []byte("root_label = \"sys\"\ninit = \"/bin/sh\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.RootLabel != "sys" || c.Init != "/bin/sh" || c.DataLabel != layout.DataLabel {
		t.Errorf("got %+v", c)
	}
	// A bad file boots with the defaults, and the error says which line.
	c, err = ParseInit("/etc/ovroot/init.toml", []byte("root_label = \"sys\"\n\ndevice_timeout = 5\n"))
	var e *Error
	if !errors.As(err, &e) || e.Line != 3 || e.Key != "device_timeout" {
		t.Fatalf("err = %v", err)
	}
	if !reflect.DeepEqual(c, DefaultInit()) {
		t.Errorf("bad config gave %+v, want defaults", c)
	}
}

func TestInitEncodeRoundTrip(t *testing.T) {
	in := DefaultInit()
	in.DeviceTimeout = Duration(1500 * time.Millisecond)
	in.DataLabel = "my data"
	in.Reset.Keep = []string{"/etc/dropbear", "/root/.ssh"}
	in.Reset.ButtonWindow = Duration(3 * time.Second)
	in.Grow = false
	b, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseInit("x", b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip: %+v != %+v", out, in)
	}
}

func TestLoadInitMissingIsDefault(t *testing.T) {
	c, err := LoadInit(filepath.Join(t.TempDir(), "none.toml"))
	if err != nil || !reflect.DeepEqual(c, DefaultInit()) {
		t.Errorf("got %+v, %v", c, err)
	}
}

func TestSize(t *testing.T) {
	good := map[string]Size{"0": 0, "4096": 4096, "64MiB": 64 << 20, "1G": 1 << 30, "2 GiB": 2 << 30, "512KiB": 512 << 10, "3T": 3 << 40, "7B": 7}
	for s, want := range good {
		got, err := ParseSize(s)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", s, got, err, want)
		}
		if back, err := ParseSize(got.String()); err != nil || back != got {
			t.Errorf("String round trip of %q: %q", s, got.String())
		}
	}
	for _, s := range []string{"", "MiB", "1.5GiB", "-1M", "10 furlongs", "99999999999T", "1e9"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) accepted", s)
		}
	}
}

func TestKeyLines(t *testing.T) {
	src := `a = 1
"b.c" = 2 # comment with x = 3
s = """
fake = 1
"""
arr = [
  "y = 2",
]
[t . u]
d.e = { f = 1, g = 2 }
last = 'z'
`
	got := keyLines(src)
	want := map[string]int{"a": 1, "b.c": 2, "s": 3, "arr": 6, "t.u": 9, "t.u.d.e": 10, "t.u.d.e.f": 10, "t.u.d.e.g": 10, "t.u.last": 11}
	for k, l := range want {
		if got[k] != l {
			t.Errorf("line of %q = %d, want %d", k, got[k], l)
		}
	}
	for _, k := range []string{"fake", "x", "y"} {
		if _, ok := got[k]; ok {
			t.Errorf("%q inside a value was taken for a key", k)
		}
	}
}

func TestResetConfig(t *testing.T) {
	c, err := ParseInit("init.toml", []byte("[reset]\nkeep = [\"/etc/dropbear\"]\nbutton_key = \"0x198\"\nbutton_window = \"3s\"\nbutton_hold = \"1s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Reset.Keep, []string{"/etc/dropbear"}) || c.Reset.ButtonWindow.D() != 3*time.Second || c.Reset.ButtonHold.D() != time.Second {
		t.Errorf("reset = %+v", c.Reset)
	}
	if code, _ := KeyCode(c.Reset.ButtonKey); code != 408 {
		t.Errorf("0x198 = %d", code)
	}
	d := DefaultInit().Reset
	if d.ButtonWindow != 0 || d.ButtonKey != "KEY_RESTART" || len(d.Keep) != 0 {
		t.Errorf("defaults: %+v (the button must be off by default: it delays every boot)", d)
	}
	for name, want := range map[string]int{"KEY_RESTART": 408, "key_f12": 88, "KEY_WPS_BUTTON": 529, "30": 30} {
		if got, err := KeyCode(name); err != nil || got != want {
			t.Errorf("KeyCode(%s) = %d, %v", name, got, err)
		}
	}
	for _, bad := range []string{"", "KEY_NOPE", "0", "-1", "100000"} {
		if _, err := KeyCode(bad); err == nil {
			t.Errorf("KeyCode(%q) accepted", bad)
		}
	}
}

func TestValidateKeep(t *testing.T) {
	if err := validateKeep([]string{"/etc/dropbear", "/root/.ssh"}); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"etc", "/", "/etc/../x", "/etc/", "//etc", ""} {
		if err := validateKeep([]string{bad}); err == nil {
			t.Errorf("validateKeep(%q) = nil, want an error", bad)
		}
	}
}

// The loader defaults per arch, as README documents them, and a [boot]
// table read as written.
func TestImageLoader(t *testing.T) {
	base := "kernel = \"/k\"\nmodules_dir = \"/m\"\nrootfs = \"/r\"\n"
	for _, c := range []struct {
		name, src string
		want      layout.Loader
	}{
		{"x86_64 default", "arch = \"x86_64\"\n" + base, layout.LoaderUEFI},
		{"arm64 default", "arch = \"arm64\"\n" + base, layout.LoaderUEFI},
		{"arm64 uboot", "arch = \"arm64\"\n" + base + "[boot]\nloader = \"uboot\"\n", layout.LoaderUBoot},
		{"x86_64 none", "arch = \"x86_64\"\n" + base + "[boot]\nloader = \"none\"\n", layout.LoaderNone},
	} {
		t.Run(c.name, func(t *testing.T) {
			im, err := ParseImage("image.toml", []byte(c.src))
			if err == nil {
				err = im.Validate()
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := im.Loader(); got != c.want {
				t.Errorf("Loader() = %q, want %q", got, c.want)
			}
		})
	}
	// An arch without UEFI here (32-bit ARM) defaults to U-Boot.
	if got := layout.Arch("arm").DefaultLoader(); got != layout.LoaderUBoot {
		t.Errorf("arm DefaultLoader() = %q, want uboot", got)
	}
}

func TestInitGrow(t *testing.T) {
	if !DefaultInit().Grow {
		t.Error("DefaultInit().Grow = false, want true (grow unless turned off)")
	}
	c, err := ParseInit("init.toml", []byte("grow = false\n"))
	if err != nil || c.Grow {
		t.Errorf("ParseInit(grow = false) = Grow %v, %v; want false", c.Grow, err)
	}
	if _, err := ParseInit("init.toml", []byte("grow = \"no\"\n")); err == nil || !strings.Contains(err.Error(), "grow") {
		t.Errorf("ParseInit(grow = \"no\") error = %v, want one naming grow", err)
	}
}
