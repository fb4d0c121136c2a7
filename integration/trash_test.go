package integration

import (
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// TestTrashCollected: a reset retires the old upper and work into the
// trash, and the background collector the init starts empties it soon
// after the boot. The guest polls (up to 30 s); the host asserts no timing.
func TestTrashCollected(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			testTrashCollected(t, arch)
		})
	}
}

func testTrashCollected(t *testing.T, arch layout.Arch) {
	img := buildImage(t, arch, makeSmallRootfs(t, arch), nil)
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "fill 150")
	powerOff(t, vm)

	vm = boot(t, img, withCmdline("ovroot.reset=1"))
	expect(t, vm, "ovroot: factory reset (trigger=cmdline")
	// The trash held something at this boot: the old upper and work.
	expect(t, vm, "ovroot: deleting 2 retired upper and work trees")
	expect(t, vm, "GUEST: ready")
	trash := "/overlay/" + layout.MetaDir + "/" + layout.TrashDir
	if out, err := guestErr(vm, "wait-empty "+trash+" 30"); err != nil {
		t.Errorf("the trash collector did not empty %s: %v\n%s\n%s", trash, err, out, vm.Tail(40))
	}
	if got := guest(t, vm, "exists /var/fill"); !strings.Contains(got, "exists=false") {
		t.Errorf("after the reset: %s", got)
	}
	powerOff(t, vm)
}
