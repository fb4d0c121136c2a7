package boot

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// retryDelay is how long the init waits before trying again to build a root.
const retryDelay = 5 * time.Second

// Rescue is what PID 1 does after an attempt built no root: say what the
// kernel sees, then run the emergency shell on the console when the
// initramfs has one, or wait, before the next attempt.
func Rescue(log *Logger, sys Sys) {
	defer func() {
		if r := recover(); r != nil {
			log.Errorf("PANIC in rescue: %v", r)
			time.Sleep(retryDelay)
		}
	}()
	devs, _ := sys.BlockDevices()
	log.Errorf("block devices: %s", describeDevices(devs))
	if !emergencyShell(log) {
		log.Errorf("trying again in %s", retryDelay)
		time.Sleep(retryDelay)
	}
}

// emergencyShellPath is where the initramfs carries a shell for when no
// root can be built (u-root's rush; ls, cat, dmesg and mount beside it).
const emergencyShellPath = "/bin/sh"

// emergencyShell runs the initramfs's shell on the console until it exits;
// it reports false when there is none.
func emergencyShell(log *Logger) bool {
	if _, err := os.Stat(emergencyShellPath); err != nil {
		return false
	}
	log.Errorf("starting an emergency shell on the console; leave it (Ctrl-D) to try booting again")
	cmd := exec.Command(emergencyShellPath)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = []string{"PATH=/bin:/sbin", "HOME=/", "TERM=linux"}
	// Its own session with the console as controlling terminal, so Ctrl-C
	// reaches what runs in it, not PID 1.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	start := time.Now()
	if err := cmd.Run(); err != nil {
		log.Errorf("emergency shell: %v", err)
	}
	log.Errorf("emergency shell exited: trying to boot again")
	// A shell that cannot run (no console input) must not make a busy loop.
	if d := time.Since(start); d < retryDelay {
		time.Sleep(retryDelay - d)
	}
	return true
}

// AttachKmsg sends the log to /dev/kmsg too, once devtmpfs is mounted.
// printk_devkmsg=on lifts the kernel's rate limit on user-space kmsg writes
// (10 lines per 5 s), which a boot log would otherwise hit.
func AttachKmsg(log *Logger) {
	if log.hasKmsg() {
		return // a later attempt: attached already
	}
	kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		log.Warnf("open /dev/kmsg: %v (logging to the console only)", err)
		return
	}
	if err := os.WriteFile("/proc/sys/kernel/printk_devkmsg", []byte("on\n"), 0); err != nil {
		log.Warnf("lift /dev/kmsg rate limit: %v", err)
	}
	printk, _ := os.ReadFile("/proc/sys/kernel/printk")
	log.AttachKmsg(kmsg, string(printk))
}
