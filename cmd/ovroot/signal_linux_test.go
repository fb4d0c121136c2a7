package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ovroot/ovroot/internal/testenv"
)

// buildOvroot compiles this command into dir.
func buildOvroot(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "ovroot")
	cmd := exec.Command(filepath.Join(goroot(), "bin", "go"), "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func goroot() string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "/usr/local/go"
	}
	return strings.TrimSpace(string(out))
}

// bigRootfs writes a rootfs of incompressible files (so mksquashfs runs for
// seconds) as a directory, and the same as a tarball.
func bigRootfs(t *testing.T, dir string) (root, tarball string) {
	t.Helper()
	root = filepath.Join(dir, "rootfs")
	tarball = filepath.Join(dir, "rootfs.tar")
	tf, err := os.Create(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	tw := tar.NewWriter(tf)
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 4<<20)
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "sbin/init"), []byte("init"), 0o755)
	tw.WriteHeader(&tar.Header{Name: "sbin/init", Typeflag: tar.TypeReg, Mode: 0o755, Size: 4})
	tw.Write([]byte("init"))
	for i := 0; i < 48; i++ { // 192 MiB
		rng.Read(buf)
		name := fmt.Sprintf("data/blob%02d", i)
		os.MkdirAll(filepath.Join(root, "data"), 0o755)
		if err := os.WriteFile(filepath.Join(root, name), buf, 0o644); err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(buf))})
		tw.Write(buf)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return root, tarball
}

// procsWithEnv lists the processes whose environment holds kv: what the
// build started (everything inherits its TMPDIR), orphaned or not.
func procsWithEnv(kv string) []string {
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte("\x00"+kv+"\x00")) && !bytes.HasPrefix(env, []byte(kv+"\x00")) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
			continue // exited, waiting to be reaped by whoever adopted it
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		found = append(found, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(comm))))
	}
	return found
}

// childNamed reports whether pid has a live child process named comm.
func childNamed(pid int, comm string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.HasPrefix(s[strings.IndexByte(s, '(')+1:], comm+")") {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

// An `ovroot build` sent SIGTERM or SIGINT while it unpacks the rootfs,
// runs mksquashfs or writes the image stops: it exits with an error (not
// killed by the signal), kills mksquashfs, removes its temporary
// directories and leaves no image, complete or partial, at -o.
func TestBuildSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ovroot binary and a 192 MiB rootfs")
	}
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		testenv.Missing(t, "mksquashfs not installed (make deps)")
	}
	amd := filepath.Join(testenv.KernelCache(), "amd64")
	if _, err := os.Stat(filepath.Join(amd, "e2fsck")); err != nil {
		testenv.Missing(t, "no kernel cache (make kernels): "+err.Error())
	}
	work := t.TempDir()
	bin := buildOvroot(t, work)
	root, tarball := bigRootfs(t, work)
	for _, c := range []struct {
		name   string
		rootfs string
		sig    syscall.Signal
		// after is the log line after which the signal is sent.
		after string
		// mksquashfs: wait until mksquashfs runs, then signal.
		mksquashfs bool
	}{
		{"SIGTERM during mksquashfs", root, syscall.SIGTERM, "squashfs: making it of", true},
		{"SIGINT during mksquashfs", root, syscall.SIGINT, "squashfs: making it of", true},
		{"SIGINT during unpack", tarball, syscall.SIGINT, "squashfs: making it of", false},
		{"SIGTERM during unpack", tarball, syscall.SIGTERM, "squashfs: making it of", false},
		{"SIGINT during image write", root, syscall.SIGINT, " entries, ", false},
		{"SIGTERM during image write", root, syscall.SIGTERM, " entries, ", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			tmp := filepath.Join(dir, "tmp")
			os.Mkdir(tmp, 0o755)
			spec := filepath.Join(dir, "image.toml")
			os.WriteFile(spec, []byte(fmt.Sprintf("arch = \"x86_64\"\nkernel = %q\nmodules_dir = %q\ne2fsck = %q\nrootfs = %q\nemergency_shell = false\ndata_size = \"16MiB\"\n",
				filepath.Join(amd, "vmlinuz"), filepath.Join(amd, "modules"), filepath.Join(amd, "e2fsck"), c.rootfs)), 0o644)
			out := filepath.Join(dir, "out", "disk.img")
			os.Mkdir(filepath.Dir(out), 0o755)
			// The static e2fsck stands in for the init binary: no cross-compile.
			cmd := exec.Command(bin, "build", "-f", spec, "--init-binary", filepath.Join(amd, "e2fsck"), "-o", out)
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			seen := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				sc := bufio.NewScanner(stderr)
				once := false
				for sc.Scan() {
					fmt.Fprintln(&log, sc.Text())
					if !once && strings.Contains(sc.Text(), c.after) {
						once = true
						close(seen)
					}
				}
				if !once {
					close(seen)
				}
			}()
			<-seen
			if c.mksquashfs {
				deadline := time.Now().Add(2 * time.Minute)
				for !childNamed(cmd.Process.Pid, "mksquashfs") && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if !childNamed(cmd.Process.Pid, "mksquashfs") {
					cmd.Process.Kill()
					t.Fatalf("mksquashfs never ran under ovroot (pid %d); log:\n%s", cmd.Process.Pid, log.String())
				}
			}
			cmd.Process.Signal(c.sig)
			<-done
			err = cmd.Wait()
			t.Logf("ovroot build: %v\n%s", err, log.String())
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			switch {
			case ws.Signaled():
				t.Errorf("ovroot was killed by %v: it did not stop its children or clean up", ws.Signal())
			case ws.ExitStatus() == 0:
				t.Errorf("ovroot exited 0 after %v", c.sig)
			}
			if left := procsWithEnv("TMPDIR=" + tmp); len(left) > 0 {
				t.Errorf("processes the build started still run: %v", left)
				for _, p := range left {
					pid, _ := strconv.Atoi(strings.Fields(p)[0])
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			if names, _ := os.ReadDir(tmp); len(names) > 0 {
				var l []string
				for _, n := range names {
					l = append(l, n.Name())
				}
				t.Errorf("temporary files left in TMPDIR: %v", l)
			}
			if names, _ := os.ReadDir(filepath.Dir(out)); len(names) > 0 {
				t.Errorf("files left beside -o: %v", names)
			}
		})
	}
}
