package boot

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// retryDelay is how long the init waits before trying again to build a root.
const retryDelay = 5 * time.Second

// Main is PID 1's whole life in the initramfs: boot, and when no root can be
// built, say why and try again rather than exit (PID 1 exiting is a kernel
// panic). It never returns.
func Main() {
	if os.Getenv(collectorEnv) == "1" && os.Getpid() != 1 {
		collectTrashChild()
	}
	log := NewLogger(os.Stdout)
	b := &Boot{Sys: LinuxSys{}, Logf: log.Infof, Warnf: log.Errorf, OnPseudoFS: func() { attachKmsg(log) }}
	b.Logf("init starting (pid %d)", os.Getpid())
	for attempt := 1; ; attempt++ {
		err := b.Run()
		log.Errorf("cannot build a root (attempt %d): %v", attempt, err)
		devs, _ := b.Sys.BlockDevices()
		log.Errorf("block devices: %s", DescribeDevices(devs))
		if !emergencyShell(log) {
			log.Errorf("trying again in %s", retryDelay)
			time.Sleep(retryDelay)
		}
	}
}

// EmergencyShell is where the initramfs carries a shell for when no root
// can be built (u-root's rush; ls, cat, dmesg and mount beside it).
const EmergencyShell = "/bin/sh"

// emergencyShell runs the initramfs's shell on the console until it exits;
// it reports false when there is none.
func emergencyShell(log *Logger) bool {
	if _, err := os.Stat(EmergencyShell); err != nil {
		return false
	}
	log.Errorf("starting an emergency shell on the console; leave it (Ctrl-D) to try booting again")
	cmd := exec.Command(EmergencyShell)
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

// attachKmsg sends the log to /dev/kmsg too, once devtmpfs is mounted.
// printk_devkmsg=on lifts the kernel's rate limit on user-space kmsg writes
// (10 lines per 5 s), which a boot log would otherwise hit.
func attachKmsg(log *Logger) {
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
