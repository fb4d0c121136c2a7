// Package reset is the factory reset of an ovroot data partition, and the
// restore of a backup, which is a reset whose new upper is the backup: a
// durable request (written by ovrootctl, or by the init for the cmdline and
// button triggers), and the reset itself, which the init performs on the
// mounted data filesystem before it stacks the overlay.
//
// The names it uses on the data filesystem (mounted at /overlay) are
// listed in package layout (data.go).
//
// The reset never deletes the old upper in the boot path: it renames it into
// the trash, which costs the same for ten files or a million. Every step is
// idempotent and the state is read back from what exists, so a power cut at
// any moment leaves a request that the next boot finishes:
//
//	request present, no keep/      copy the keep-list out of the upper into keep.new/
//	                                (a restore: unpack the staged backup there instead),
//	                                sync, rename keep.new/ -> keep/
//	upper/ or work/ present         rename them into trash/
//	keep/ present, no upper/        rename keep/ -> upper/, create work/
//	then                            write last-reset, remove the request, then the
//	                                staged backup
//
// A reset interrupted after keep/ became upper/ runs again from the top on
// the next boot; it copies the kept paths out of the new upper, which holds
// only them, so the result is the same. A restore interrupted there unpacks
// the staged backup again, which is still there: it is removed only after
// the request, and a staged backup no request names is removed (a cut
// between the two; RemoveStaleRestore).
//
// A restore replaces the upper entirely: the keep-list does not apply (the
// backup is what the owner asked to have; a key or identity it lacks is
// made again as on a first boot). A backup that turns out unreadable at
// boot (damaged on the flash since ovrootctl checked it) fails before
// anything is retired: keep.new/ is discarded, the old upper stays, and
// the request is dropped with a record saying why (ErrRestoreDropped),
// rather than kept to fail, and send the boot to its fallback, every time.
package reset

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// Triggers.
const (
	TriggerCmdline = "cmdline"
	TriggerCtl     = "ovrootctl"
	TriggerButton  = "button"
)

func meta(dir string) string { return filepath.Join(dir, layout.MetaDir) }

// Schedule records a reset request durably: written to a temporary file,
// synced, renamed over the request, and the directory synced. A request
// already pending is replaced (its trigger updated).
func Schedule(dir, trigger string, now time.Time) error {
	if err := os.MkdirAll(meta(dir), 0o700); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	data, _ := json.Marshal(layout.ResetRequest{Trigger: trigger, Time: now.UTC()})
	err := WriteAtomic(meta(dir), layout.ResetRequestFile, data)
	if errors.Is(err, unix.ENOSPC) {
		// A full partition is when a person most wants a reset: give up
		// the reserve, which exists for this, and try again.
		if released, rerr := releaseReserve(dir); rerr != nil {
			return fmt.Errorf("%w (and releasing the reserve: %v)", err, rerr)
		} else if released {
			err = WriteAtomic(meta(dir), layout.ResetRequestFile, data)
		}
	}
	if err != nil {
		return err
	}
	// A restore this request replaced: its backup is no longer named.
	_, err = removeRestore(dir)
	return err
}

// releaseReserve deletes the reserve the boot keeps on the data filesystem
// (layout.ReserveFile) and reports whether there was one. The boot puts it
// back once there is room again.
func releaseReserve(dir string) (bool, error) {
	err := os.Remove(layout.Meta(dir, layout.ReserveFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, syncDir(meta(dir))
}

// Cancel withdraws a pending request and removes a staged backup; it
// reports whether there was a request. The request goes first: a staged
// backup without a request is nothing, a request without its backup would
// be a restore that cannot be done.
func Cancel(dir string) (bool, error) {
	err := os.Remove(filepath.Join(meta(dir), layout.ResetRequestFile))
	if errors.Is(err, fs.ErrNotExist) {
		_, err := removeRestore(dir)
		return false, err
	}
	if err != nil {
		return false, err
	}
	if err := syncDir(meta(dir)); err != nil {
		return true, err
	}
	_, err = removeRestore(dir)
	return true, err
}

// Pending returns the pending request, or nil.
func Pending(dir string) (*layout.ResetRequest, error) {
	data, err := os.ReadFile(filepath.Join(meta(dir), layout.ResetRequestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r layout.ResetRequest
	if err := json.Unmarshal(data, &r); err != nil || r.Trigger == "" {
		// A request that exists is a request, even if its content was
		// damaged: resetting is what the owner asked for.
		return &layout.ResetRequest{Trigger: "unknown (unreadable request file)"}, nil
	}
	return &r, nil
}

// Last returns the record of the last completed reset, or nil.
func Last(dir string) (*layout.ResetRecord, error) {
	data, err := os.ReadFile(filepath.Join(meta(dir), layout.LastResetFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r layout.ResetRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(meta(dir), layout.LastResetFile), err)
	}
	return &r, nil
}

// Resetter performs a pending reset on a mounted data filesystem.
type Resetter struct {
	Dir  string   // the data filesystem's mount point (/overlay)
	Keep []string // absolute paths of the merged root to carry over
	Now  func() time.Time
	// Before runs before each step that changes the disk, named; an error
	// stops the reset there, as a power cut would. The init uses it for the
	// test-only step delay; unit tests inject crashes with it.
	Before func(step string) error
}

// checkKeep refuses a keep path that is not an absolute path of a file
// below the root: the reset copies it out of the upper and must not leave
// it. (config validates the keep-list with a message for the person who
// wrote it; this guards the reset itself.)
func checkKeep(keep []string) error {
	for _, k := range keep {
		rel := strings.TrimPrefix(k, "/")
		if rel == k || !filepath.IsLocal(rel) {
			return fmt.Errorf("keep path %q is not a path below /", k)
		}
	}
	return nil
}

func (r *Resetter) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Resetter) step(name string) error {
	if r.Before != nil {
		return r.Before(name)
	}
	return nil
}

// Perform carries out the pending request. It returns the record it wrote;
// with no request pending it does nothing and returns nil, nil.
func (r *Resetter) Perform() (*layout.ResetRecord, error) {
	untouched := false
	rec, err := r.perform(&untouched)
	if err != nil && untouched && errors.Is(err, unix.ENOSPC) {
		// A partial copy of the kept paths: give its room back.
		os.RemoveAll(filepath.Join(meta(r.Dir), layout.KeepNewDir))
		return nil, fmt.Errorf("%w: %v", ErrNoRoom, err)
	}
	return rec, err
}

// ErrNoRoom is returned (wrapped) by Perform when the data filesystem has
// no room for the reset even without the reserve (the kept paths must be
// copied before the old upper goes) and nothing was changed yet: the upper
// is as it was and the request stays.
var ErrNoRoom = errors.New("no room on the data partition for the factory reset")

// perform does the reset; *untouched stays true while a failure leaves the
// upper as it was (a fresh reset that has not retired anything yet).
func (r *Resetter) perform(untouched *bool) (*layout.ResetRecord, error) {
	start := r.now()
	req, err := Pending(r.Dir)
	if err != nil {
		return nil, err
	}
	if req == nil {
		_, err := removeRestore(r.Dir)
		return nil, err
	}
	if err := checkKeep(r.Keep); err != nil {
		return nil, err
	}
	m := meta(r.Dir)
	upper := filepath.Join(r.Dir, layout.UpperName)
	work := filepath.Join(r.Dir, layout.WorkName)
	keep := filepath.Join(m, layout.KeepDir)
	keepNew := filepath.Join(m, layout.KeepNewDir)
	trash := filepath.Join(m, layout.TrashDir)
	resumed := exists(keep) || !exists(upper)
	*untouched = !resumed

	if err := r.step("prepare"); err != nil {
		return nil, err
	}
	// The reset needs a little room (the trash directory, the kept paths'
	// copies, its record) and is what a person tries when the partition is
	// full: the reserve goes first. The old upper leaves with the trash.
	if _, err := releaseReserve(r.Dir); err != nil {
		return nil, fmt.Errorf("release the reserve: %w", err)
	}
	if err := os.MkdirAll(trash, 0o700); err != nil {
		return nil, err
	}
	if err := syncDirs(m, r.Dir); err != nil {
		return nil, err
	}

	if !exists(keep) {
		if err := r.step("stage-keep"); err != nil {
			return nil, err
		}
		if err := os.RemoveAll(keepNew); err != nil {
			return nil, fmt.Errorf("discard %s: %w", keepNew, err)
		}
		if err := os.Mkdir(keepNew, 0o755); err != nil {
			return nil, err
		}
		if req.Restore != "" {
			// The backup is the new upper; the keep-list does not apply.
			err := stageRestore(m, req.Restore, keepNew)
			var bad *BadLayerError
			if errors.As(err, &bad) {
				return r.dropRestore(req, start, err)
			}
			if err != nil {
				return nil, fmt.Errorf("unpack the backup %s: %w", req.Restore, err)
			}
		} else {
			for _, k := range r.Keep {
				if err := stageKept(upper, keepNew, strings.TrimPrefix(k, "/")); err != nil {
					return nil, fmt.Errorf("keep %s: %w", k, err)
				}
			}
		}
		if err := syncTree(keepNew); err != nil {
			return nil, err
		}
		if err := r.step("commit-keep"); err != nil {
			return nil, err
		}
		if err := os.Rename(keepNew, keep); err != nil {
			return nil, err
		}
		if err := syncDir(m); err != nil {
			return nil, err
		}
	}

	*untouched = false
	for _, d := range []string{upper, work} {
		if !exists(d) {
			continue
		}
		if err := r.step("retire-" + filepath.Base(d)); err != nil {
			return nil, err
		}
		dst, err := trashName(trash, filepath.Base(d))
		if err != nil {
			return nil, err
		}
		if err := os.Rename(d, dst); err != nil {
			return nil, fmt.Errorf("move %s into the trash: %w", d, err)
		}
		if err := syncDirs(trash, r.Dir); err != nil {
			return nil, err
		}
	}

	if err := r.step("new-upper"); err != nil {
		return nil, err
	}
	if err := os.Rename(keep, upper); err != nil {
		return nil, fmt.Errorf("install the new upper: %w", err)
	}
	if err := syncDirs(m, r.Dir); err != nil {
		return nil, err
	}
	if err := r.step("new-work"); err != nil {
		return nil, err
	}
	if err := os.Mkdir(work, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	if err := syncDir(r.Dir); err != nil {
		return nil, err
	}

	rec := &layout.ResetRecord{Trigger: req.Trigger, RequestedAt: req.Time, Resumed: resumed, Restored: req.Restore != ""}
	for _, k := range r.Keep {
		if rec.Restored {
			break
		}
		if _, err := os.Lstat(filepath.Join(upper, k)); err == nil {
			rec.Kept = append(rec.Kept, k)
		}
	}
	if err := r.finish(rec, start); err != nil {
		return nil, err
	}
	return rec, nil
}

// finish writes the record of a reset (or a restore) done or dropped,
// then removes the request: in that order, so a cut between them runs
// the request again rather than losing its record.
func (r *Resetter) finish(rec *layout.ResetRecord, start time.Time) error {
	rec.DoneAt = r.now().UTC()
	rec.DurationMS = rec.DoneAt.Sub(start).Milliseconds()
	if err := r.step("record"); err != nil {
		return err
	}
	data, _ := json.Marshal(rec)
	if err := WriteAtomic(meta(r.Dir), layout.LastResetFile, data); err != nil {
		return err
	}
	if err := r.step("clear-request"); err != nil {
		return err
	}
	_, err := Cancel(r.Dir)
	return err
}

// trashName picks an unused name in the trash.
func trashName(trash, base string) (string, error) {
	for i := 0; i < 1000; i++ {
		p := filepath.Join(trash, fmt.Sprintf("%s.%d.%d", base, time.Now().UnixNano(), i))
		if !exists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("no free name in %s", trash)
}

// stageKept copies upper/rel into keepNew/rel. Parent directories are
// created with the upper's owner, mode and times but no overlay xattrs: a
// parent that was opaque in the old upper must not hide the factory
// content around the kept path. The kept entry itself is copied whole,
// xattrs included (an opaque directory or a whiteout stays what it was).
func stageKept(upper, keepNew, rel string) error {
	src := filepath.Join(upper, rel)
	if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
		return nil // not changed since the factory: nothing to carry
	} else if err != nil {
		return err
	}
	// Parents, outermost first.
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		dst := filepath.Join(keepNew, p)
		if exists(dst) {
			continue
		}
		st, err := os.Lstat(filepath.Join(upper, p))
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return nil // the kept path cannot exist below a non-directory
		}
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		if err := copyMeta(filepath.Join(upper, p), dst, false); err != nil {
			return err
		}
	}
	dst := filepath.Join(keepNew, rel)
	if exists(dst) {
		return nil // inside a kept directory already copied
	}
	return copyTree(src, dst)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// WriteAtomic replaces dir/name with data durably: a temporary file,
// written and synced, renamed over the name, and the directory synced. On
// failure the temporary file is removed (it may hold the space that was
// short).
func WriteAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = fsync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// fsync is fsync(2). Every sync of the package goes through it, so a test
// can model a power cut that loses whatever was not synced.
var fsync = (*os.File).Sync

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := fsync(f); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func syncDirs(dirs ...string) error {
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// syncTree fsyncs every regular file and directory below root, deepest
// first, so a rename of root publishes only complete content.
func syncTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			err = fsync(f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syncDir(dirs[i]); err != nil {
			return err
		}
	}
	return nil
}

// CollectTrash deletes everything in a trash directory and returns the
// number of retired trees removed. The init's background collector passes
// "." after fchdir to the trash, so it keeps working after switch_root
// moves the mount.
func CollectTrash(trash string) (int, error) {
	entries, err := os.ReadDir(trash)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if err := removeAll(filepath.Join(trash, e.Name())); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// removeAll is os.RemoveAll that first makes directories writable (the
// overlay's work/work is mode 000).
func removeAll(p string) error {
	err := os.RemoveAll(p)
	if err == nil {
		return nil
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// TrashCount is how many retired trees wait in the trash.
func TrashCount(dir string) int {
	entries, _ := os.ReadDir(filepath.Join(meta(dir), layout.TrashDir))
	return len(entries)
}
