package boot

import (
	"fmt"
	"os"
	"time"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// trial_watchdog: a root that hangs (never confirms, never fails, never
// reboots) would stay on trial forever. On a trial boot with
// [init] trial_watchdog set and a hardware watchdog (/dev/watchdog), the
// init starts this binary again as a background keeper before switch_root
// (like the confirmer). The keeper arms the watchdog and feeds it until
// the slot is confirmed (mark-good or confirm_after write
// layout.ConfirmedFile in /run): then it stops the watchdog (the magic
// close, "V") and exits, so a confirmed slot is never reset by it and the
// root's own watchdog daemon may open /dev/watchdog from then on. If the
// slot is not confirmed within trial_watchdog, the keeper stops feeding:
// the board resets, and the loader counts the try. A kernel that hangs
// starves the watchdog as well.

const (
	watchdogEnv    = "OVROOT_TRIAL_WATCHDOG"
	watchdogDevice = "/dev/watchdog"
	// watchdogHW is the hardware timeout the keeper asks for: the reset
	// comes at most this long after the keeper stops feeding.
	watchdogHW = 10 // seconds
)

// startWatchdog starts the keeper for a trial boot when the config asks
// for one and the machine has a watchdog; otherwise it says why not. The
// init opens the device itself (its /dev is still the initramfs's; the
// keeper starts as switch_root moves it) and hands it over as fd 4.
func (b *Boot) startWatchdog() {
	after := b.cfg.TrialWatchdog.D()
	if !b.InTrial() || after <= 0 {
		return
	}
	wd, err := os.OpenFile(b.path(watchdogDevice), os.O_WRONLY, 0)
	if err != nil {
		b.Warnf("trial_watchdog: no %s (%v; load the board's watchdog driver with modules): a hanging root stays on trial", watchdogDevice, err)
		return
	}
	defer wd.Close() // the keeper holds it now: this close does not stop it
	start := b.StartWatchdog
	if start == nil {
		start = startWatchdog
	}
	if err := start(b.path(layout.NewRootDir), after, wd); err != nil {
		wd.Write([]byte("V")) // stop what opening it started
		b.Warnf("trial_watchdog: cannot start the watchdog keeper: %v (a hanging root stays on trial)", err)
		return
	}
	b.Logf("watchdog armed: slot %s resets unless confirmed within %s", b.state.Slot.Slot, after)
}

func startWatchdog(newRoot string, after time.Duration, wd *os.File) error {
	return startBackgroundFiles(newRoot, []*os.File{wd}, watchdogEnv+"="+after.String())
}

// IsWatchdogKeeper reports whether this process is the keeper, not PID 1.
func IsWatchdogKeeper() bool { return os.Getenv(watchdogEnv) != "" && os.Getpid() != 1 }

// KeepWatchdog is the keeper's whole life (see above).
func KeepWatchdog() {
	after, err := time.ParseDuration(os.Getenv(watchdogEnv))
	if err != nil {
		os.Exit(2)
	}
	deadline := time.Now().Add(after)
	wd := os.NewFile(4, watchdogDevice) // from the init, open
	if err := enterRoot(); err != nil {
		// Keep feeding until the deadline anyway: the confirmation
		// cannot be seen, so a confirmed slot is reset then.
		logKmsg(fmt.Sprintf("<3>ovroot: trial_watchdog: cannot enter the root: %v", err))
	}
	fd := int(wd.Fd())
	timeout := watchdogHW
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, timeout); err != nil {
		timeout = 30 // the driver's default heartbeat, typically
	}
	feed := func() { unix.IoctlWatchdogKeepalive(fd) }
	feed()
	period := time.Duration(timeout) * time.Second / 3
	for {
		if _, err := os.Stat(layout.ConfirmedFile); err == nil {
			wd.Write([]byte("V")) // magic close: the watchdog stops
			wd.Close()
			logKmsg("<6>ovroot: trial_watchdog: slot confirmed, watchdog stopped")
			os.Exit(0)
		}
		if time.Now().After(deadline) {
			logKmsg(fmt.Sprintf("<3>ovroot: trial_watchdog: the slot was not confirmed within %s: no longer feeding the watchdog, the board resets within %ds", after, timeout))
			for {
				time.Sleep(time.Hour) // the fd stays open: no magic close
			}
		}
		feed()
		time.Sleep(min(period, time.Until(deadline)+time.Millisecond))
	}
}
