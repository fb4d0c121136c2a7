package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

// loaderChains are the firmware boot chains proven in QEMU, one boot pair
// each.
var loaderChains = []struct {
	arch   layout.Arch
	loader layout.Loader
}{
	{layout.X86_64, layout.LoaderUEFI},
	{layout.ARM64, layout.LoaderUEFI},
	{layout.ARM64, layout.LoaderUBoot},
	{layout.ARM, layout.LoaderUBoot},
}

// TestLoaderChain boots each image from its disk alone, as a device does:
// QEMU gets the firmware and the disk, no -kernel, -initrd or -append. The
// firmware finds the loader, the loader the kernel and initramfs of the
// boot partition, the init the overlay root. A file written on the first
// boot is read on a second boot through the same chain. The guest proves
// which chain started it: under UEFI /sys/firmware/efi and the
// LoaderEntrySelected variable systemd-boot sets; under U-Boot no EFI, the
// u-boot,version U-Boot puts in the device tree's /chosen, and the command
// line of extlinux.conf (its ovroot.loader=uboot is in no other place),
// after U-Boot said on the console it read that file.
func TestLoaderChain(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, c := range loaderChains {
		t.Run(string(c.arch)+"/"+string(c.loader), func(t *testing.T) {
			t.Parallel()
			testLoaderChain(t, c.arch, c.loader)
		})
	}
}

func testLoaderChain(t *testing.T, arch layout.Arch, loader layout.Loader) {
	img := buildImage(t, arch, makeSmallRootfs(t, arch), func(im *config.Image) {
		im.Boot.Loader = string(loader)
		if loader == layout.LoaderUEFI {
			// For the guest to read systemd-boot's variables.
			im.Modules = append(im.Modules, "efivarfs")
		}
	})
	bootChain := func() *qemu.VM {
		t.Helper()
		cfg, cleanup, err := qemu.ForImageLoader(img.path, qemu.FirmwareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cleanup)
		if cl := cfg.CommandLine(); cfg.Kernel != "" || cfg.Initrd != "" || cfg.Cmdline != "" ||
			strings.Contains(cl, "-kernel") || strings.Contains(cl, "-initrd") || strings.Contains(cl, "-append") {
			t.Fatalf("a loader boot hands QEMU a kernel: %s", cl)
		}
		return startVM(t, img, cfg)
	}
	checkChain := func(vm *qemu.VM) {
		t.Helper()
		cmdline := guest(t, vm, "cat /proc/cmdline")
		marker := layout.LoaderParam + "=" + string(loader)
		if !strings.Contains(cmdline, marker) {
			t.Errorf("/proc/cmdline = %q, want the boot entry's %s", cmdline, marker)
		}
		efi := guest(t, vm, "exists /sys/firmware/efi")
		// U-Boot records itself in the device tree it hands the kernel.
		uboot := guest(t, vm, "exists /proc/device-tree/chosen/u-boot,version")
		if want := fmt.Sprintf("exists=%v", loader == layout.LoaderUBoot); !strings.Contains(uboot, want) {
			t.Errorf("booted through %s: %s, want %s", loader, strings.TrimSpace(uboot), want)
		}
		switch loader {
		case layout.LoaderUEFI:
			if !strings.Contains(efi, "exists=true") {
				t.Errorf("booted through UEFI but %s", efi)
			}
			if got := guest(t, vm, "efivar LoaderEntrySelected"); got != "ovroot.conf\n" {
				t.Errorf("LoaderEntrySelected = %q, want systemd-boot's entry ovroot.conf", got)
			}
			if got := guest(t, vm, "efivar LoaderInfo"); !strings.HasPrefix(got, "systemd-boot ") {
				t.Errorf("LoaderInfo = %q, want systemd-boot's", got)
			}
		case layout.LoaderUBoot:
			if !strings.Contains(efi, "exists=false") {
				t.Errorf("booted through U-Boot's extlinux but %s", efi)
			}
			for _, w := range []string{"U-Boot 20", "Retrieving file: /" + layout.ExtlinuxFile} {
				if !strings.Contains(vm.Console(), w) {
					t.Errorf("console lacks U-Boot's %q:\n%s", w, vm.Tail(80))
				}
			}
		}
	}

	vm := bootChain()
	expect(t, vm, "is blank: formatting it ext4")
	expect(t, vm, "GUEST: ready")
	checkChain(vm)
	guest(t, vm, "write /etc/chain.txt written-through-"+string(loader))
	powerOff(t, vm)

	vm = bootChain()
	expect(t, vm, "GUEST: ready")
	checkChain(vm)
	if got, want := guest(t, vm, "cat /etc/chain.txt"), "written-through-"+string(loader)+"\n"; got != want {
		t.Errorf("second boot through %s: /etc/chain.txt = %q, want %q", loader, got, want)
	}
	if strings.Contains(vm.Console(), "formatting") {
		t.Errorf("second boot formatted the data partition again")
	}
	powerOff(t, vm)
}
