package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/ovroot/ovroot/internal/demo"
	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/layout"
)

// TestTerminal runs `ovroot run` of the demo's root (its init, shell,
// ovrootctl and a few commands) as a person does: the real binary, under
// a shell, on an 80x24 pseudo-terminal that is their controlling terminal.
// Typed commands reach the guest's shell and their output comes back;
// Ctrl-a x quits; `poweroff` ends a second run; SIGTERM to ovroot ends a
// third cleanly, and SIGKILL a fourth. Every run leaves the terminal's
// modes as they were and no QEMU behind. Across the four boots the demo
// shows what ovroot is for: a file written in /etc persists (after sync
// and a pulled plug; and without sync through the demo's poweroff), and is
// gone after ovrootctl factory-reset while the factory's files stay.
func TestTerminal(t *testing.T) {
	requireTools(t)
	t.Parallel()
	ovroot := buildHostTool(t)
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			testTerminal(t, arch, ovroot)
		})
	}
}

const termTestFile = "/etc/term-test.txt"

func testTerminal(t *testing.T, arch layout.Arch, ovroot string) {
	img := buildImage(t, arch, makeDemoRootfs(t, arch), nil)

	// Ctrl-a x, after a change made durable with sync.
	r := runOnTerminal(t, ovroot, img, "Ctrl-a x")
	r.expect(t, "ovroot: switching to /sbin/init")
	r.expect(t, "ovroot demo, release 1 ("+string(arch)+")") // the welcome
	r.expect(t, "% ")                                        // the shell's prompt
	r.typ(t, "ovrootctl status\r")
	r.expect(t, "PERSISTENT")
	r.expect(t, "first boot: the data partition was blank")
	r.expect(t, "% ")
	// The output is not the echo of what was typed: the shell ran it.
	r.typ(t, "cat "+termTestFile+"\r")
	r.expect(t, "written by the test, read by cat")
	r.expect(t, "% ")
	r.typ(t, "echo kept-in-etc > /etc/note.txt\r")
	r.expect(t, "% ")
	r.typ(t, "sync\r")
	r.expect(t, "% ")
	r.typ(t, "\x01x")
	r.expect(t, "QEMU: Terminated")
	r.finish(t, 0)

	// poweroff, on the same disk: a second boot. The demo's poweroff
	// writes everything out itself.
	r = runOnTerminal(t, ovroot, img, "poweroff")
	r.expect(t, "% ")
	r.typ(t, "cat /etc/note.txt\r")
	r.expect(t, "kept-in-etc")
	r.expect(t, "% ")
	r.typ(t, "echo kept-in-root > /root/more.txt\r")
	r.expect(t, "% ")
	r.typ(t, "poweroff\r")
	r.expect(t, "init: powering off")
	r.finish(t, 0)

	// SIGTERM, as timeout(1), CI runners and systemd stop a program:
	// ovroot kills QEMU and says so, rather than dying and leaving it.
	r = runOnTerminal(t, ovroot, img, "SIGTERM")
	r.expect(t, "% ")
	r.typ(t, "cat /root/more.txt\r")
	r.expect(t, "kept-in-root")
	r.expect(t, "% ")
	r.typ(t, "ovrootctl factory-reset\r")
	r.expect(t, "factory reset scheduled")
	r.expect(t, "% ")
	r.signal(t, syscall.SIGTERM)
	r.expect(t, "killed QEMU: terminated")
	r.finish(t, 1)

	// SIGKILL: ovroot can do nothing; QEMU must die with it and put the
	// terminal back itself. Before that, the reset happened: the user's
	// file is gone, the factory's is there.
	r = runOnTerminal(t, ovroot, img, "SIGKILL")
	r.expect(t, "% ")
	r.typ(t, "cat /etc/note.txt\r")
	r.expect(t, "no such file or directory")
	r.expect(t, "% ")
	r.typ(t, "cat "+termTestFile+"\r")
	r.expect(t, "written by the test, read by cat")
	r.expect(t, "% ")
	r.signal(t, syscall.SIGKILL)
	r.finish(t, 128+int(syscall.SIGKILL))
}

// makeDemoRootfs is the demo's root (demo.Install: its init, poweroff,
// shell, welcome) with three of its commands, and a file of the factory's.
func makeDemoRootfs(t *testing.T, arch layout.Arch) string {
	t.Helper()
	_, ctl := buildGuest(t, arch)
	progs := t.TempDir()
	cmds := []string{"cat", "echo", "sync"}
	pkgs := []string{demo.Init, demo.Shell}
	for _, c := range cmds {
		pkgs = append(pkgs, "github.com/u-root/u-root/cmds/core/"+c)
	}
	if err := gobuild.Build(context.Background(), arch, sourceDir(t), progs+"/", pkgs...); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(ctl)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(progs, "ovrootctl"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := demo.Install(root, progs, arch, "1", cmds); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, termTestFile), []byte("written by the test, read by cat\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// termRun is one `ovroot run` on its own pseudo-terminal.
type termRun struct {
	name    string
	img     image
	ptmx    *os.File // what a terminal emulator holds
	tty     *os.File // the terminal ovroot runs on
	before  *unix.Termios
	sh      *exec.Cmd
	mu      sync.Mutex
	out     strings.Builder // everything the terminal showed, "\r" removed
	cursor  int
	changed chan struct{} // closed and replaced on every write
	waited  bool
}

// runOnTerminal starts `ovroot run --direct disk.img` under sh, the session leader
// on a new 80x24 pseudo-terminal, as a login shell in a terminal window is.
func runOnTerminal(t *testing.T, ovroot string, img image, name string) *termRun {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	r := &termRun{name: name, img: img, ptmx: ptmx, tty: tty, changed: make(chan struct{})}
	if r.before, err = unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS); err != nil {
		t.Fatal(err)
	}
	// sh stays, so that the session's end (SIGHUP to the terminal's
	// foreground group) does not do what ovroot must.
	// The echo is retried: after a SIGKILLed ovroot, sh may write while
	// QEMU, still the terminal's foreground, handles its Pdeathsig, and
	// get EIO ("echo: I/O error", seen once in CI); the status it reports
	// is the one ovroot exited with either way.
	r.sh = exec.Command("/bin/sh", "-c", `"$@"; s=$?; i=0; until echo "ovroot exited $s" 2>/dev/null || [ $i -ge 100 ]; do i=$((i+1)); sleep 0.1; done; exec sleep 3600`,
		"sh", ovroot, "run", "--direct", "--timeout", "10m", img.path)
	r.sh.Stdin, r.sh.Stdout, r.sh.Stderr = tty, tty, tty
	r.sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := r.sh.Start(); err != nil {
		t.Fatal(err)
	}
	go r.read()
	t.Cleanup(func() {
		r.endShell()
		killOurQEMU(t, img)
		ptmx.Close()
		tty.Close()
		if t.Failed() {
			t.Logf("terminal of the %s run, last lines:\n%s", r.name, r.tail(40))
		}
	})
	return r
}

func (r *termRun) read() {
	b := make([]byte, 4096)
	for {
		n, err := r.ptmx.Read(b)
		r.mu.Lock()
		r.out.WriteString(strings.ReplaceAll(string(b[:n]), "\r", ""))
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// expect waits for substr on the terminal after the previous match.
func (r *termRun) expect(t *testing.T, substr string) {
	t.Helper()
	deadline := time.NewTimer(bootTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		s := r.out.String()[r.cursor:]
		changed := r.changed
		if i := strings.Index(s, substr); i >= 0 {
			r.cursor += i + len(substr)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s run: no %q on the terminal after %s", r.name, substr, bootTimeout)
		}
	}
}

// typ types s on the terminal, as keys.
func (r *termRun) typ(t *testing.T, s string) {
	t.Helper()
	if _, err := r.ptmx.WriteString(s); err != nil {
		t.Fatalf("type %q: %v", s, err)
	}
}

// signal sends sig to ovroot (sh's child), as kill(1) from elsewhere does.
func (r *termRun) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	pid := childOf(t, r.sh.Process.Pid)
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill -%d %d: %v", sig, pid, err)
	}
}

// finish waits for sh to report ovroot's exit code, then checks that the
// terminal's modes are as they were before and that no QEMU of this test's
// disk is left.
func (r *termRun) finish(t *testing.T, wantCode int) {
	t.Helper()
	r.expect(t, fmt.Sprintf("ovroot exited %d\n", wantCode))
	// QEMU outlives a SIGKILLed ovroot for as long as it takes to handle
	// its Pdeathsig; a QEMU still there after a minute is left behind.
	for i := 0; i < 600 && ourQEMU(t, r.img) != 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if pid := ourQEMU(t, r.img); pid != 0 {
		t.Errorf("%s run: QEMU (pid %d) still runs after ovroot ended", r.name, pid)
	}
	after, err := unix.IoctlGetTermios(int(r.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *r.before {
		t.Errorf("%s run: terminal modes after ovroot run:\n%+v\nwant as before:\n%+v", r.name, *after, *r.before)
	}
	// A Go program of the guest that crashed (the demo's poweroff once
	// died of "all goroutines are asleep" after asking for the power-off).
	r.mu.Lock()
	out := r.out.String()
	r.mu.Unlock()
	for _, crash := range []string{"fatal error:", "panic:", "goroutine 1 ["} {
		if strings.Contains(out, crash) {
			t.Errorf("%s run: the terminal shows %q: a program crashed", r.name, crash)
		}
	}
	r.endShell()
}

func (r *termRun) endShell() {
	if !r.waited {
		r.sh.Process.Kill()
		r.sh.Wait()
		r.waited = true
	}
}

func (r *termRun) tail(n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	lines := strings.Split(r.out.String(), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procs calls f with the pid and /proc/<pid>/stat of every process.
func procs(t *testing.T, f func(pid int, stat string)) {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		f(pid, string(stat))
	}
}

// childOf waits for parent's first child (sh starting ovroot) and returns it.
func childOf(t *testing.T, parent int) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		child := 0
		procs(t, func(pid int, stat string) {
			// pid (comm) state ppid ...; comm may hold spaces.
			f := strings.Fields(stat[strings.LastIndex(stat, ")")+1:])
			if len(f) > 1 && f[1] == strconv.Itoa(parent) {
				child = pid
			}
		})
		if child != 0 {
			return child
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("process %d has no child", parent)
	return 0
}

// ourQEMU is the pid of a running qemu-system process booting this test's
// disk (other tests' QEMUs are not ours to judge or kill), or 0.
func ourQEMU(t *testing.T, img image) int {
	t.Helper()
	found := 0
	procs(t, func(pid int, stat string) {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return
		}
		args := strings.Split(string(cmdline), "\x00")
		if strings.HasPrefix(filepath.Base(args[0]), "qemu-system") && strings.Contains(string(cmdline), "file="+img.path+",") {
			found = pid
		}
	})
	return found
}

// killOurQEMU cleans up after a failed test: SIGKILL to this test's QEMU.
func killOurQEMU(t *testing.T, img image) {
	t.Helper()
	if pid := ourQEMU(t, img); pid != 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
