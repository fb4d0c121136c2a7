package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/layout"
)

// TestPanicFallback boots an init built with the test-only fault hook
// (-tags ovroot_faults) and ovroot.fault=panic-after-modules,panic-in-data:
// the first attempt panics after loading the modules, the second in the
// data partition step. PID 1 must log each panic with its stack on the
// console and in the kernel log, try again after the first and go volatile
// after the second, and never let the kernel panic.
func TestPanicFallback(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			testPanicFallback(t, arch)
		})
	}
}

func testPanicFallback(t *testing.T, arch layout.Arch) {
	initBin := filepath.Join(t.TempDir(), "init")
	if err := gobuild.BuildTags(context.Background(), arch, []string{"ovroot_faults"}, sourceDir(t), initBin, "./cmd/init"); err != nil {
		t.Fatal(err)
	}
	img := buildImageOpts(t, arch, makeSmallRootfs(t, arch), imagebuild.Options{InitBinary: initBin}, nil)
	vm := boot(t, img, withCmdline("ovroot.fault=panic-after-modules,panic-in-data"))

	expect(t, vm, "ovroot: PANIC in boot attempt: injected fault panic-after-modules (ovroot.fault)")
	expect(t, vm, "ovroot:   goroutine 1 [running]:")
	expect(t, vm, "github.com/ovroot/ovroot/boot/fault_ovroot_faults.go:")
	expect(t, vm, "ovroot: cannot build a root (attempt 1): boot attempt: panic: injected fault panic-after-modules (ovroot.fault)")
	expect(t, vm, "ovroot: trying again in")

	expect(t, vm, "ovroot: PANIC in mount the data partition: injected fault panic-in-data (ovroot.fault)")
	expect(t, vm, "ovroot:   goroutine 1 [running]:")
	expectVolatile(t, vm, "mount the data partition: panic: injected fault panic-in-data (ovroot.fault)")

	if strings.Contains(vm.Console(), "Kernel panic") || strings.Contains(vm.Console(), "cannot build a root (attempt 2)") {
		t.Errorf("the second attempt did not boot, or the kernel panicked:\n%s", vm.Tail(60))
	}
	// The kernel log has them too (dmesg after the fact).
	kmsg := guest(t, vm, "kmsg ovroot: PANIC in")
	for _, want := range []string{"ovroot: PANIC in boot attempt: injected fault panic-after-modules", "ovroot: PANIC in mount the data partition: injected fault panic-in-data"} {
		if !strings.Contains(kmsg, want) {
			t.Errorf("kernel log lacks %q:\n%s", want, kmsg)
		}
	}
	powerOff(t, vm)
}
