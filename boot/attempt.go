package boot

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Attempt runs one boot (Run) and turns a panic anywhere in it into an
// error, after logging the panic and its stack: PID 1 runs third-party code
// on data read from the device (the ext4 formatter, the TOML decoder), and a
// panic in PID 1 would end in a kernel panic and, with panic=-1, reboot into
// the same panic forever. Like Run, it returns only when no root was built.
func (b *Boot) Attempt() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = b.recovered("boot attempt", r)
			b.cleanup()
		}
	}()
	return b.Run()
}

// guard runs one step that may panic on what the device holds; a panic is
// logged with its stack and returned as the step's error, so the boot
// falls back as for any other failure of that step.
func (b *Boot) guard(step string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = b.recovered(step, r)
		}
	}()
	return f()
}

// recovered logs a recovered panic and its stack, and returns it as an error.
func (b *Boot) recovered(step string, r any) error {
	b.Warnf("PANIC in %s: %v", step, r)
	for _, l := range strings.Split(strings.TrimSpace(string(debug.Stack())), "\n") {
		// Tabs become spaces: the kernel log escapes them.
		b.Warnf("  %s", strings.ReplaceAll(l, "\t", "    "))
	}
	return fmt.Errorf("%s: panic: %v", step, r)
}
