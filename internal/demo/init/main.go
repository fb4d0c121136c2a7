// Command init is the demo device's /sbin/init, and its poweroff, reboot
// and halt by the name it is called with (symlinks, as in busybox).
//
// As process 1 it mounts what a shell session needs that ovroot's init
// did not (/tmp, /dev/pts, /dev/shm), sets the hostname from /etc/hostname,
// prints /etc/motd and keeps a shell on the console, starting another when
// it exits. It mounts nothing over /etc or anywhere else on the root, so
// what a user changes lands in the overlay and persists, which is what the
// demo shows. u-root's init, which the demo ran before, copied /etc to a
// tmpfs and made every change there vanish at power-off.
//
// poweroff, reboot and halt ask process 1 (SIGUSR2, SIGTERM, SIGUSR1, as
// busybox init takes them), which stops every process, syncs, remounts
// / and /overlay read-only and only then powers off: u-root's poweroff
// called reboot(2) at once, losing what the page cache still held.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Programs the shell session gets.
const (
	shell = "/bin/sh"
	home  = "/root"
	motd  = "/etc/motd"
)

var env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home, "USER=root", "TERM=linux", "PWD=" + home}

// requests are the names this program answers to besides init, and the
// signal each sends to process 1.
var requests = map[string]syscall.Signal{
	"poweroff": syscall.SIGUSR2,
	"reboot":   syscall.SIGTERM,
	"halt":     syscall.SIGUSR1,
}

func main() {
	name := filepath.Base(os.Args[0])
	if sig, ok := requests[name]; ok {
		if len(os.Args) > 1 {
			fmt.Fprintf(os.Stderr, "usage: %s (no arguments: it stops every process, syncs and %ss)\n", name, name)
			os.Exit(2)
		}
		if err := syscall.Kill(1, sig); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
		// Process 1 stops this one with everything else. (A bare
		// select{} would end the program: "all goroutines are asleep".)
		for {
			time.Sleep(time.Hour)
		}
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: not process 1 (poweroff, reboot and halt are this program under those names)")
		os.Exit(2)
	}
	run()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "init: "+format+"\n", args...)
}

// mounts are what a session needs beyond ovroot's init's /proc, /sys, /dev
// and /run (moved into this root by switch_root): all in RAM.
var mounts = []struct {
	source, target, fstype, data string
}{
	{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
	{"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=666,gid=5,mode=620"},
	{"tmpfs", "/dev/shm", "tmpfs", "mode=1777"},
}

func setup() {
	// Kernel messages below "warning" stay in dmesg, off the shell's lines.
	_ = os.WriteFile("/proc/sys/kernel/printk", []byte("4"), 0o644)
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			logf("mkdir %s: %v", m.target, err)
			continue
		}
		if err := unix.Mount(m.source, m.target, m.fstype, unix.MS_NOSUID|unix.MS_NODEV, m.data); err != nil && err != unix.EBUSY {
			logf("mount %s on %s: %v", m.fstype, m.target, err)
		}
	}
	if b, err := os.ReadFile("/etc/hostname"); err == nil {
		if h := strings.TrimSpace(string(b)); h != "" {
			if err := unix.Sethostname([]byte(h)); err != nil {
				logf("hostname %s: %v", h, err)
			}
		}
	}
	// Ctrl-Alt-Del sends SIGINT to process 1 instead of restarting at once.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
}

// startShell prints the welcome and starts a shell that owns the console.
func startShell() (int, error) {
	if b, err := os.ReadFile(motd); err == nil {
		os.Stdout.Write(b)
	}
	p, err := os.StartProcess(shell, []string{"sh"}, &os.ProcAttr{
		Dir:   home,
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	})
	if err != nil {
		return 0, err
	}
	pid := p.Pid
	p.Release() // reaped by wait4(-1) below, with every orphan
	return pid, nil
}

func run() {
	setup()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPWR)
	var (
		shellPID int
		started  time.Time
		restart  <-chan time.Time
		startNow = func() {
			var err error
			started = time.Now()
			if shellPID, err = startShell(); err != nil {
				logf("start %s: %v; trying again in 5 s", shell, err)
				restart = time.After(5 * time.Second)
			}
		}
	)
	startNow()
	for {
		select {
		case <-restart:
			restart = nil
			startNow()
		case sig := <-sigs:
			switch sig {
			case syscall.SIGCHLD:
				for {
					var ws unix.WaitStatus
					pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
					if pid <= 0 || err != nil {
						break
					}
					if pid == shellPID {
						shellPID = 0
						if time.Since(started) < time.Second {
							// A shell that dies at once would spin.
							logf("%s exited at once (%v); starting another in 5 s", shell, ws)
							restart = time.After(5 * time.Second)
						} else {
							logf("the shell exited; starting another (poweroff ends the demo)")
							startNow()
						}
					}
				}
			case syscall.SIGUSR2, syscall.SIGPWR:
				shutdown(unix.LINUX_REBOOT_CMD_POWER_OFF, "powering off")
			case syscall.SIGTERM, syscall.SIGINT:
				shutdown(unix.LINUX_REBOOT_CMD_RESTART, "rebooting")
			case syscall.SIGUSR1:
				shutdown(unix.LINUX_REBOOT_CMD_HALT, "halting")
			}
		}
	}
}

// reapFor reaps children until none is left or d has passed.
func reapFor(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.ECHILD {
			return
		}
		if pid <= 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// shutdown stops every process (SIGTERM, 3 s, SIGKILL), writes everything
// out and remounts the root and the data partition read-only, so nothing
// is left for the journal to replay, then powers off, restarts or halts.
func shutdown(cmd int, what string) {
	logf("%s: stopping every process", what)
	_ = unix.Kill(-1, unix.SIGTERM)
	reapFor(3 * time.Second)
	_ = unix.Kill(-1, unix.SIGKILL)
	reapFor(2 * time.Second)
	unix.Sync()
	for _, m := range []string{"/", "/overlay"} {
		if err := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil && err != unix.EINVAL {
			logf("remount %s read-only: %v (synced all the same)", m, err)
		}
	}
	unix.Sync()
	logf("%s", what)
	if err := unix.Reboot(cmd); err != nil {
		logf("reboot(2): %v", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}
