// Package tmpdir makes the host tool's temporary directories so that the
// next run can tell those of a dead run (SIGKILL, a power cut of the build
// machine) from those of a run still going, and remove them: each holds a
// lock file its process keeps locked (flock) while it lives; the kernel
// drops the lock when the process dies, whatever killed it.
//
// Only directories in os.TempDir() named "ovroot-*" that hold the lock
// file are ever removed; anything else there is left alone.
package tmpdir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every directory Make creates.
const Prefix = "ovroot-"

// lockName is the lock file inside each directory.
const lockName = ".ovroot-lock"

// Make creates os.TempDir()/ovroot-<what>-<random> and locks it for this
// process. done removes it (and drops the lock); call it once.
func Make(what string) (dir string, done func(), err error) {
	dir, err = os.MkdirTemp("", Prefix+what+"-")
	if err != nil {
		return "", nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("lock temporary directory %s: %w", dir, err)
	}
	return dir, func() {
		os.RemoveAll(dir)
		f.Close()
	}, nil
}

// CleanStale removes the directories Make created in os.TempDir() whose
// process is gone (their lock is free), and returns their paths. A
// directory another run still holds is never touched.
func CleanStale() ([]string, error) {
	tmp := os.TempDir()
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), Prefix) {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|unix.O_NOFOLLOW, 0)
		if err != nil {
			continue // not ours, or not ours to judge
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.Close() // a live run holds it
			continue
		}
		if err != nil {
			f.Close()
			errs = append(errs, fmt.Errorf("%s: %w", dir, err))
			continue
		}
		// Ours now: the run that made it is dead.
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, dir)
		}
		f.Close()
	}
	return removed, errors.Join(errs...)
}
