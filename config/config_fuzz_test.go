package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseImage: any image.toml either parses (and then validates or
// not) or gives a *config.Error naming the file; an accepted spec's init
// config encodes and parses back to itself. Never a panic.
func FuzzParseImage(f *testing.F) {
	for _, s := range []string{
		"arch = \"x86_64\"\nkernel = \"/k\"\nmodules_dir = \"/m\"\nrootfs = \"/r\"\n",
		"arch = \"arm64\"\nkernel=\"/k\"\nmodules_dir=\"/m\"\nrootfs=\"/r\"\nslots = 2\n[boot]\ntries = 3\nloader = \"uefi\"\n",
		"arch = \"arm\"\nrootfs = \"r.tar\"\ndata_size = \"1GiB\"\nmodules = [\"ext4\", \"a/b\"]\n[init]\ndevice_timeout = \"5s\"\n[init.reset]\nkeep = [\"/etc/x\"]\nbutton_key = \"KEY_RESTART\"\n",
		"arch = \"x86_64\"\ncmdline = '''a\nb'''\n",
		"[frobnicate]\nx = 1\n",
		"dat_size = 1\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		im, err := ParseImage("fuzz/image.toml", []byte(src))
		if err == nil {
			err = im.Validate()
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.File != "fuzz/image.toml" {
				t.Fatalf("ParseImage(%q) = %v: not a *config.Error naming the file", src, err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz/image.toml") {
				t.Fatalf("error %q does not start with the file name", err)
			}
			return
		}
		data, err := im.Init.Encode()
		if err != nil {
			t.Fatalf("Encode of an accepted init config: %v", err)
		}
		back, err := ParseInit("init.toml", data)
		if err != nil {
			t.Fatalf("ParseInit(Encode()) = %v\n%s", err, data)
		}
		again, err := back.Encode()
		if err != nil || string(again) != string(data) {
			t.Fatalf("init config does not round-trip:\n%s\nthen\n%s", data, again)
		}
	})
}

// FuzzParseInit: the init reads /etc/ovroot/init.toml at every boot; any
// content parses or gives a *config.Error naming the file and boots with
// defaults, never a panic.
func FuzzParseInit(f *testing.F) {
	for _, s := range []string{
		"root_label = \"sys\"\ninit = \"/bin/sh\"\n",
		"device_timeout = 5\n",
		"[reset]\nkeep = [\"/etc/a\"]\nbutton_hold = \"3s\"\nbutton_window = \"1s\"\n",
		"on_corrupt = \"format\"\ngrow = false\nconfirm_after = \"30s\"\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := ParseInit("/etc/ovroot/init.toml", []byte(src))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.File != "/etc/ovroot/init.toml" {
				t.Fatalf("ParseInit(%q) = %v: not a *config.Error naming the file", src, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseInit accepted %q but Validate says %v", src, err)
		}
	})
}
