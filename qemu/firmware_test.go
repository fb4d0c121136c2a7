package qemu

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// Each firmware kind gives QEMU the firmware and the disk and no kernel;
// a UEFI variable store is a private copy, never the template; snapshot=on
// leaves the disk as it was.
func TestFirmwareArgs(t *testing.T) {
	dir := t.TempDir()
	code, vars, uboot := filepath.Join(dir, "CODE.fd"), filepath.Join(dir, "VARS.fd"), filepath.Join(dir, "u-boot.bin")
	template := bytes.Repeat([]byte{0xa5}, 4096)
	for _, f := range []string{code, vars, uboot} {
		if err := os.WriteFile(f, template, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name     string
		arch     layout.Arch
		loader   layout.Loader
		o        FirmwareOptions
		snapshot bool
		want     string // the arguments between -monitor none and -drive if=none
	}{
		{"uefi x86_64", layout.X86_64, layout.LoaderUEFI, FirmwareOptions{File: code, Vars: vars}, false,
			"-drive if=pflash,format=raw,readonly=on,file=" + code + " -drive if=pflash,format=raw,file=@VARS"},
		{"uefi arm64 snapshot", layout.ARM64, layout.LoaderUEFI, FirmwareOptions{File: code, Vars: vars}, true,
			"-drive if=pflash,format=raw,readonly=on,file=" + code + " -drive if=pflash,format=raw,file=@VARS"},
		{"uboot arm64", layout.ARM64, layout.LoaderUBoot, FirmwareOptions{File: uboot}, false, "-bios " + uboot},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run := t.TempDir()
			fw, err := PrepareFirmware(c.arch, c.loader, c.o, run)
			if err != nil {
				t.Fatal(err)
			}
			cfg := Config{Arch: c.arch, Firmware: fw, Disks: []string{"/d.img"}, Snapshot: c.snapshot}
			_, args, err := cfg.Args()
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(args, " ")
			want := strings.ReplaceAll(c.want, "@VARS", fw.Vars)
			if !strings.Contains(got, "-monitor none "+want+" -drive if=none") {
				t.Errorf("args %s\nwant the firmware as %s", got, want)
			}
			if strings.Contains(got, "-kernel") || strings.Contains(got, "-initrd") || strings.Contains(got, "-append") {
				t.Errorf("a firmware boot hands QEMU a kernel: %s", got)
			}
			disk := "-drive if=none,id=d0,file=/d.img,format=raw"
			if c.snapshot {
				disk += ",snapshot=on"
			}
			if !strings.Contains(got, disk+" ") {
				t.Errorf("args %s\nwant the disk as %s", got, disk)
			}
			if c.loader == layout.LoaderUEFI {
				if fw.Vars == vars || filepath.Dir(fw.Vars) != run {
					t.Errorf("vars %s: want a copy in %s, not the template %s", fw.Vars, run, vars)
				}
				if data, err := os.ReadFile(fw.Vars); err != nil || !bytes.Equal(data, template) {
					t.Errorf("vars copy %s: %v, not the template's bytes", fw.Vars, err)
				}
				if fi, err := os.Stat(fw.Vars); err != nil || fi.Mode().Perm()&0o200 == 0 {
					t.Errorf("vars copy %s is not writable by the VM (%v)", fw.Vars, err)
				}
			} else if fw.Vars != "" || fw.Code != "" {
				t.Errorf("U-Boot firmware %+v has pflash drives", fw)
			}
		})
	}
}

// The Debian packages' firmware by default; errors name what is missing.
func TestPrepareFirmwareDefaults(t *testing.T) {
	fw, err := PrepareFirmware(layout.ARM64, layout.LoaderUBoot, FirmwareOptions{}, t.TempDir())
	if err == nil && fw.BIOS != "/usr/lib/u-boot/qemu_arm64/u-boot.bin" {
		t.Errorf("arm64 U-Boot = %+v, want u-boot-qemu's qemu_arm64/u-boot.bin", fw)
	}
	if err != nil && !strings.Contains(err.Error(), "u-boot-qemu") {
		t.Errorf("missing U-Boot: %v, want the Debian package named", err)
	}
	if _, err := PrepareFirmware(layout.X86_64, layout.LoaderUBoot, FirmwareOptions{}, t.TempDir()); err == nil || !strings.Contains(err.Error(), "--firmware") {
		t.Errorf("x86_64 through uboot: %v, want an error pointing at --firmware", err)
	}
	missing := filepath.Join(t.TempDir(), "nope.fd")
	if _, err := PrepareFirmware(layout.X86_64, layout.LoaderUEFI, FirmwareOptions{File: missing}, t.TempDir()); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing --firmware: %v, want it named", err)
	}
}
