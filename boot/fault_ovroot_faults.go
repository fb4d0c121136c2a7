//go:build ovroot_faults

package boot

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// The fault hook of test builds (go build -tags ovroot_faults; never in the
// firmware): ovroot.fault=panic-after-modules,panic-in-data on the kernel
// command line panics at those points, each once per boot of the device,
// so a QEMU test sees the panic recovered and the next attempt go on.
var fired sync.Map

func (b *Boot) fault(point string) {
	want := strings.Split(b.cmdline.Params["ovroot.fault"], ",")
	if !slices.Contains(want, "panic-"+point) {
		return
	}
	if _, done := fired.LoadOrStore(point, true); done {
		return
	}
	panic(fmt.Sprintf("injected fault panic-%s (ovroot.fault)", point))
}
