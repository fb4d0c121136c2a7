package tmpdir

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// A directory whose run died (its lock free) is removed by the next run;
// one a live run holds, and anything not made by Make, are left alone.
func TestCleanStale(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if os.Getenv("OVROOT_TMPDIR_CHILD") != "" {
		return
	}
	live, done, err := Make("build")
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	// A run that died with its directory: a child process makes one and
	// is killed (SIGKILL: nothing of its own runs).
	child := exec.Command(os.Args[0], "-test.run=^TestMakeAndHang$")
	child.Env = append(os.Environ(), "OVROOT_TMPDIR_CHILD=1", "TMPDIR="+tmp)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := out.Read(buf)
	dead := string(buf[:n])
	if _, err := os.Stat(filepath.Join(dead, lockName)); err != nil {
		t.Fatalf("the child said %q: %v", dead, err)
	}
	// While the child lives, its directory is not stale.
	if removed, err := CleanStale(); err != nil || len(removed) != 0 {
		t.Fatalf("CleanStale with every run alive = %v, %v", removed, err)
	}
	child.Process.Kill()
	child.Wait()
	foreign := filepath.Join(tmp, "ovroot-not-made-by-make")
	os.Mkdir(foreign, 0o755)
	other := filepath.Join(tmp, "someone-else")
	os.Mkdir(other, 0o755)

	removed, err := CleanStale()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dead}) {
		t.Errorf("CleanStale removed %v, want only the dead run's %s", removed, dead)
	}
	for _, d := range []string{live, foreign, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
	if _, err := os.Stat(dead); err == nil {
		t.Errorf("the dead run's %s is still there", dead)
	}
	done()
	if _, err := os.Stat(live); err == nil {
		t.Errorf("done left %s", live)
	}
}

// TestMakeAndHang is TestCleanStale's child: it makes a directory, says
// where, and waits to be killed.
func TestMakeAndHang(t *testing.T) {
	if os.Getenv("OVROOT_TMPDIR_CHILD") == "" {
		t.Skip("run by TestCleanStale")
	}
	dir, _, err := Make("build")
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString(dir)
	select {}
}
