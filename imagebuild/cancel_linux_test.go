package imagebuild

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// livePIDsWithEnv lists live processes whose environment holds kv.
func livePIDsWithEnv(kv string) []string {
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), []byte("\x00"+kv+"\x00")) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		found = append(found, e.Name())
	}
	return found
}

// Cancelling MakeSquashfs kills mksquashfs and everything it started (its
// process group), and returns without waiting for them.
func TestMakeSquashfsCancelKillsGroup(t *testing.T) {
	bin := t.TempDir()
	mark := filepath.Join(t.TempDir(), "started")
	// A stand-in mksquashfs that starts a child and waits for it.
	script := "#!/bin/sh\nsleep 1000 &\necho started > " + mark + "\nwait\n"
	if err := os.WriteFile(filepath.Join(bin, "mksquashfs"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	kv := "OVROOT_TEST_MARK=" + filepath.Base(t.TempDir())
	k, v, _ := strings.Cut(kv, "=")
	t.Setenv(k, v)
	root := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := MakeSquashfs(ctx, root, filepath.Join(t.TempDir(), "x.sqfs"), "gzip")
		done <- err
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(mark); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stand-in mksquashfs never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("MakeSquashfs = %v, want context canceled", err)
	}
	if left := livePIDsWithEnv(kv); len(left) > 0 {
		t.Errorf("processes mksquashfs started still run after cancel: %v", left)
		for _, p := range left {
			if b, _ := os.ReadFile("/proc/" + p + "/cmdline"); len(b) > 0 {
				t.Logf("%s: %q", p, b)
			}
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}
