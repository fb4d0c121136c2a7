package boot

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
	"golang.org/x/sys/unix"
)

// confirm_after: a trial boot confirms itself once the real init has run
// that long. The init starts this binary again as a background process
// before switch_root (like the trash collector), handing it the new root
// as an open directory; it sleeps, enters that root and does what
// `ovrootctl mark-good` does. If the system crashes or reboots before,
// nothing is confirmed and the loader keeps counting.

const confirmEnv = "OVROOT_CONFIRM_AFTER"

// startConfirmer starts the confirmer for a trial boot when the config
// asks for one. A failure to start it is logged: the boot goes on, and an
// explicit mark-good still confirms it.
func (b *Boot) startConfirmer() {
	after := b.cfg.ConfirmAfter.D()
	if !b.InTrial() || after <= 0 {
		return
	}
	start := b.StartConfirmer
	if start == nil {
		start = startConfirmer
	}
	if err := start(b.path(layout.NewRootDir), after, b.cfg); err != nil {
		b.Warnf("confirm_after: cannot start the confirmer: %v (confirm with ovrootctl mark-good)", err)
		return
	}
	b.Logf("slot %s is confirmed after %s of running unless the system goes down first", b.state.Slot.Slot, after)
}

func startConfirmer(newRoot string, after time.Duration, health config.Init) error {
	return startBackground(newRoot, confirmEnv+"="+after.String(),
		healthTimeoutEnv+"="+health.HealthTimeout.D().String(), healthFailureEnv+"="+health.HealthFailure)
}

// The confirmer's health check settings ([init] health_timeout,
// health_failure).
const (
	healthTimeoutEnv = "OVROOT_HEALTH_TIMEOUT"
	healthFailureEnv = "OVROOT_HEALTH_FAILURE"
)

// enterRoot makes the real root (the directory the init handed over as
// fd 3) this background process's root and working directory.
func enterRoot() error {
	if err := unix.Fchdir(3); err != nil {
		return err
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	return os.Chdir("/")
}

func logKmsg(msg string) {
	if kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		kmsg.WriteString(msg + "\n")
		kmsg.Close()
	}
}

// IsConfirmer reports whether this process is the confirmer, not PID 1.
func IsConfirmer() bool { return os.Getenv(confirmEnv) != "" && os.Getpid() != 1 }

// Confirm is the confirmer's whole life: sleep, enter the real root (fd
// 3), mark the running slot good, say so on /dev/kmsg, exit.
func Confirm() {
	after, err := time.ParseDuration(os.Getenv(confirmEnv))
	if err != nil {
		os.Exit(2)
	}
	time.Sleep(after)
	err = enterRoot()
	msg := ""
	if err != nil {
		msg = fmt.Sprintf("<3>ovroot: confirm_after: cannot enter the root: %v", err)
	} else {
		timeout, _ := time.ParseDuration(os.Getenv(healthTimeoutEnv))
		s := &slot.System{Mounter: slot.LinuxMounter{}, HealthTimeout: timeout}
		res, err := s.MarkGood()
		switch {
		case errors.Is(err, slot.ErrHealth) && os.Getenv(healthFailureEnv) == "reboot":
			// Into the next try at once (health_failure = "reboot"): the
			// loader counts it, and falls back when the tries are used up.
			logKmsg(fmt.Sprintf("<3>ovroot: confirm_after: %v: rebooting into the next try", err))
			unix.Sync()
			unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
			os.Exit(1)
		case err != nil:
			msg = fmt.Sprintf("<3>ovroot: confirm_after: %v", err)
		case res.From == "":
			msg = fmt.Sprintf("<6>ovroot: slot %s (build %s) was confirmed already", res.Slot, res.BuildID)
		default:
			msg = fmt.Sprintf("<6>ovroot: slot %s (build %s) confirmed after %s (%s is now %s)", res.Slot, res.BuildID, after, res.From, res.Entry)
		}
	}
	logKmsg(msg)
	os.Exit(0)
}
