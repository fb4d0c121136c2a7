// Command init is ovroot's /init: PID 1 of the initramfs (see package boot
// for the boot sequence). It never exits: PID 1 exiting is a kernel panic.
package main

import (
	"math"
	"os"
	"runtime/debug"

	"github.com/ovroot/ovroot/boot"
	"github.com/ovroot/ovroot/internal/eshell"
)

func main() {
	// /bin/sh, /bin/ls, ... of the initramfs are links to this binary: the
	// emergency shell and its commands share the init's Go runtime.
	if _, ok := eshell.Lookup(os.Args[0]); ok {
		eshell.Main(os.Args) // exits
	}
	// The same binary is the background deleter of what a factory reset
	// retired (started by the boot, outliving switch_root).
	if boot.IsTrashCollector() {
		boot.CollectTrash() // exits
	}
	// And the trial watchdog keeper, and the confirmer of a trial boot
	// with confirm_after.
	if boot.IsWatchdogKeeper() {
		boot.KeepWatchdog() // exits, or feeds until it lets the board reset
	}
	if boot.IsConfirmer() {
		boot.Confirm() // exits
	}

	log := boot.NewLogger(os.Stdout)
	b := &boot.Boot{
		Sys:        boot.LinuxSys{},
		Logf:       log.Infof,
		Warnf:      log.Errorf,
		Tracef:     log.Tracef,
		OnPseudoFS: func() { boot.AttachKmsg(log) }, // /dev is mounted: log to /dev/kmsg too
	}
	// No garbage collection during the boot unless the heap nears 64 MiB:
	// the boot allocates a few MiB and then execs the real init, which
	// drops the heap whole; collections only cost time on the way (see
	// docs/performance.md). A failed attempt turns the collector back on,
	// since the init then stays (the emergency shell, retries).
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(64 << 20)
	log.Infof("init starting (pid %d)", os.Getpid())
	for attempt := 1; ; attempt++ {
		// One boot; a panic in it is logged and returned as an error. On
		// success the real init replaces this process and nothing returns.
		err := b.Attempt()
		debug.SetGCPercent(100)
		debug.SetMemoryLimit(math.MaxInt64)
		log.Errorf("cannot build a root (attempt %d): %v", attempt, err)
		if b.InTrial() {
			// A new root slot on trial: reboot, so the loader counts the
			// try and falls back to the other slot when none are left.
			b.FailTrial(err) // returns only if the reboot failed
		}
		// A confirmed slot whose root is damaged: boot the other slot
		// when that one is confirmed.
		b.GiveUpSlot(err)       // returns only if it could not
		boot.Rescue(log, b.Sys) // emergency shell, or a pause; then try again
	}
}
