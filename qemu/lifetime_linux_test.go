package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovroot/ovroot/layout"
)

// TestStartFromThreadThatEnds: QEMU's Pdeathsig fires when the thread that
// forked it ends, and the runtime ends a thread whose locked goroutine
// returns. A VM started from such a goroutine must outlive that thread.
func TestStartFromThreadThatEnds(t *testing.T) {
	bin := fakeQEMU(t)
	type started struct {
		vm  *VM
		tid int
		err error
	}
	ch := make(chan started)
	release := make(chan struct{})
	defer close(release)
	start := func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The runtime never ends the main thread: no test there.
			// Hold it (locked and blocked, it runs nothing else), so the
			// next try runs on another thread; on a loaded machine the
			// idle main thread otherwise took every try.
			ch <- started{}
			<-release
			runtime.UnlockOSThread()
			return
		}
		// Never unlocked: the thread ends with this goroutine.
		vm, err := Start(context.Background(), Config{Arch: layout.X86_64, Binary: bin}, Options{})
		ch <- started{vm, unix.Gettid(), err}
	}
	// Hold this goroutine's thread, so that start runs on another.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var s started
	for i := 0; s.tid == 0 && s.err == nil; i++ {
		if i == 100 {
			t.Fatal("no goroutine ran on a thread other than the main one")
		}
		go start()
		s = <-ch
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	defer s.vm.Kill()
	task := fmt.Sprintf("/proc/self/task/%d", s.tid)
	for i := 0; ; i++ {
		if _, err := os.Stat(task); os.IsNotExist(err) {
			break
		}
		if i == 300 {
			t.Fatalf("thread %d of the goroutine that called Start did not end (pid %d)", s.tid, os.Getpid())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.vm.Send("still there?"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.vm.Expect(10*time.Second, "got: still there?"); err != nil {
		t.Errorf("after the starting thread ended: %v", err)
	}
}

// TestRunDiesWithParent: a SIGKILLed `ovroot run` (here this test binary
// re-run as runHelper) leaves no QEMU behind.
func TestRunDiesWithParent(t *testing.T) {
	if os.Getenv("OVROOT_QEMU_RUN_HELPER") != "" {
		t.Skip("helper")
	}
	fake := filepath.Join(t.TempDir(), "fake-qemu")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"fake QEMU pid $$\"\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunHelper$")
	cmd.Env = append(os.Environ(), "OVROOT_QEMU_RUN_HELPER="+fake)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var pid int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "fake QEMU pid "); ok {
			pid, _ = strconv.Atoi(p)
			break
		}
	}
	if pid == 0 {
		t.Fatalf("helper did not start the fake QEMU (%v)", sc.Err())
	}
	cmd.Process.Kill()
	cmd.Wait()
	for i := 0; alive(pid); i++ {
		if i == 500 {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("fake QEMU (pid %d) still runs 5 s after its parent was SIGKILLed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie has ended).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// TestRunHelper is TestRunDiesWithParent's `ovroot run`.
func TestRunHelper(t *testing.T) {
	fake := os.Getenv("OVROOT_QEMU_RUN_HELPER")
	if fake == "" {
		t.Skip("run by TestRunDiesWithParent")
	}
	Run(context.Background(), Config{Arch: layout.X86_64, Binary: fake}, strings.NewReader(""), os.Stdout, 0)
}
