//go:build !ovroot_faults

package boot

// fault is a point where a test build (-tags ovroot_faults) can inject a
// failure; in the firmware it does nothing.
func (b *Boot) fault(point string) {}
