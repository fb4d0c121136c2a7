package boot

import (
	"os"
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
		log.Errorf("trying again in %s", retryDelay)
		time.Sleep(retryDelay)
	}
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
