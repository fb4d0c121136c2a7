package config

import (
	"errors"
	"strings"
	"testing"
)

// An unknown key is an error whether or not a known key is near it: a
// key nothing resembles (frobnicate) must not pass as silently ignored.
// TestParseImageBad covers the typos that get a "did you mean".
func TestUnknownKeyWithoutNearMatch(t *testing.T) {
	base := "arch = \"x86_64\"\nkernel = \"/k\"\nmodules_dir = \"/m\"\nrootfs = \"/r\"\n"
	cases := []struct {
		name  string
		parse func(name string, data []byte) error
		src   string
		line  int
		key   string
	}{
		{"image top level", parseImage, base + "frobnicate = 1\n", 5, "frobnicate"},
		{"image [init]", parseImage, base + "[init]\nfrobnicate = 1\n", 6, "init.frobnicate"},
		{"image [boot]", parseImage, base + "[boot]\nfrobnicate = \"x\"\n", 6, "boot.frobnicate"},
		{"image [init.reset]", parseImage, base + "[init.reset]\nfrobnicate = true\n", 6, "init.reset.frobnicate"},
		{"image unknown table", parseImage, base + "[frobnicate]\nx = 1\n", 5, "frobnicate"},
		{"init.toml", parseInit, "root_label = \"sys\"\nfrobnicate = 1\n", 2, "frobnicate"},
		{"init.toml [reset]", parseInit, "[reset]\nfrobnicate = 1\n", 2, "reset.frobnicate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.parse("spec/x.toml", []byte(c.src))
			if err == nil {
				t.Fatalf("parse(%q) = nil error, want unknown key %s", c.src, c.key)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("parse(%q) = %v, not a *config.Error", c.src, err)
			}
			if e.File != "spec/x.toml" || e.Line != c.line || e.Key != c.key {
				t.Errorf("parse(%q) = file %q line %d key %q, want spec/x.toml line %d key %q (%v)", c.src, e.File, e.Line, e.Key, c.line, c.key, err)
			}
			if !strings.HasPrefix(e.Msg, "unknown key") || strings.Contains(e.Msg, "did you mean") {
				t.Errorf("parse(%q) message %q, want plain \"unknown key\"", c.src, e.Msg)
			}
		})
	}
}

func parseImage(name string, data []byte) error {
	im, err := ParseImage(name, data)
	if err == nil {
		err = im.Validate()
	}
	return err
}

func parseInit(name string, data []byte) error {
	_, err := ParseInit(name, data)
	return err
}

// A command line with a control character, or longer than the kernel and
// loader take, is refused naming the key: a newline from a TOML
// multi-line string split the boot entry and the kernel got half of it.
func TestCmdlineRefused(t *testing.T) {
	base := "kernel = \"/k\"\nmodules_dir = \"/m\"\nrootfs = \"/r\"\n"
	cases := []struct {
		name, src, want string
		line            int
	}{
		{"newline", "arch = \"x86_64\"\n" + base + "cmdline = '''\nconsole=ttyS0\nquiet'''\n", "control character '\\n' at byte 13", 5},
		{"tab", "arch = \"x86_64\"\n" + base + "cmdline = \"console=ttyS0\\tquiet\"\n", "control character '\\t'", 5},
		{"escape", "arch = \"arm64\"\n" + base + "cmdline = \"a\\u001bb\"\n", "control character '\\x1b'", 5},
		{"too long for x86_64", "arch = \"x86_64\"\n" + base + "cmdline = \"" + strings.Repeat("a", 1920) + "\"\n", "1920 bytes, more than the 1919", 5},
		{"too long for arm", "arch = \"arm\"\n" + base + "cmdline = \"" + strings.Repeat("a", 896) + "\"\n", "896 bytes, more than the 895", 5},
		{"too long with verity's root hash", "arch = \"x86_64\"\n" + base + "verity = true\ncmdline = \"" + strings.Repeat("a", 1748) + "\"\n", "1748 bytes, more than the 1747", 6},
		{"ovroot.verity= by hand", "arch = \"x86_64\"\n" + base + "cmdline = \"quiet ovroot.verity=sha256:1:00:00\"\n", "the build adds it", 5},
		{"too long for U-Boot on arm64", "arch = \"arm64\"\n" + base + "cmdline = \"" + strings.Repeat("a", 1000) + "\"\n[boot]\nloader = \"uboot\"\n", "loader uboot", 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := parseImage("spec/image.toml", []byte(c.src))
			var e *Error
			if !errors.As(err, &e) || e.Key != "cmdline" || e.Line != c.line || !strings.Contains(err.Error(), c.want) {
				t.Errorf("parse = %v, want spec/image.toml:%d: cmdline: ...%s", err, c.line, c.want)
			}
		})
	}
	for _, ok := range []string{
		"arch = \"x86_64\"\n" + base + "cmdline = \"" + strings.Repeat("a", 1919) + "\"\n",
		"arch = \"x86_64\"\n" + base + "verity = true\ncmdline = \"" + strings.Repeat("a", 1747) + "\"\n",
		"arch = \"arm64\"\n" + base + "cmdline = \"console=ttyAMA0 quiet ovroot.x=é\"\n",
	} {
		if err := parseImage("spec/image.toml", []byte(ok)); err != nil {
			t.Errorf("a good command line refused: %v", err)
		}
	}
}

// slots = 0 and tries = 0 are refused, not taken for the defaults a left-out
// key gets.
func TestZeroIsNotDefault(t *testing.T) {
	base := "arch = \"arm64\"\nkernel = \"/k\"\nmodules_dir = \"/m\"\nrootfs = \"/r\"\n"
	for _, c := range []struct{ name, src, key, want string }{
		{"slots = 0", base + "slots = 0\n", "slots", "0 is not a number of root slots"},
		{"tries = 0", base + "slots = 2\n[boot]\ntries = 0\n", "boot.tries", "0 trial boots"},
	} {
		err := parseImage("spec/image.toml", []byte(c.src))
		var e *Error
		if !errors.As(err, &e) || e.Key != c.key || e.Line == 0 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: parse = %v, want spec/image.toml:LINE: %s: %s", c.name, err, c.key, c.want)
		}
	}
	if err := parseImage("spec/image.toml", []byte(base+"slots = 2\n")); err != nil {
		t.Errorf("slots = 2 without tries: %v", err)
	}
}
