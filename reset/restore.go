package reset

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// TriggerRestore is the trigger of a restore request (ovrootctl restore).
const TriggerRestore = "restore"

// ErrRestoreDropped is returned (wrapped, with the record) by Perform when
// the staged backup of a restore request turned out unreadable at boot (a
// copy damaged on the flash since it was checked, or removed): the upper
// was left as it was, and the request was dropped so that the device does
// not fail the same way at every boot. The record says why (Failed).
var ErrRestoreDropped = errors.New("restore dropped, the upper left as it was")

// ScheduleRestore stages the backup layer read from r (an OCI layer
// tarball as package backup writes it, plain or gzip) for a restore at the
// next boot, and records the request. The layer is checked whole while it
// is copied to MetaDir/RestoreNewFile: a bad one (an unsafe or unclean
// name, an entry below one of its own symlinks, a type that is not
// restored, a malformed whiteout, a copy cut short) is refused with an
// error naming the entry (*BadLayerError), and so is one the data
// partition has no room to unpack at boot besides the staged copy,
// leaving the reserve. Only a checked copy is synced and renamed to
// MetaDir/RestoreFile, and only then is the request written (WriteAtomic):
// a request never names a backup that is not whole on disk. A pending
// factory reset or restore is replaced.
func ScheduleRestore(dir string, r io.Reader, now time.Time) (LayerSummary, error) {
	m := meta(dir)
	if err := os.MkdirAll(m, 0o700); err != nil {
		return LayerSummary{}, err
	}
	if err := syncDir(dir); err != nil {
		return LayerSummary{}, err
	}
	tmp := filepath.Join(m, layout.RestoreNewFile)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return LayerSummary{}, err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return LayerSummary{}, err
	}
	staged := false
	defer func() {
		if !staged {
			f.Close()
			os.Remove(tmp)
		}
	}()
	cw := &countWriter{w: f}
	sum, err := CheckLayer(io.TeeReader(r, cw))
	if err == nil {
		// What follows the tar's end (a record's padding) is kept too:
		// the staged copy is the file as given.
		_, err = io.Copy(cw, r)
	}
	if errors.Is(err, unix.ENOSPC) {
		return sum, fmt.Errorf("no room on the data partition for a copy of the backup (%d bytes copied): delete files and try again", cw.n)
	}
	if err != nil {
		return sum, err
	}
	if err := roomToUnpack(dir, sum); err != nil {
		return sum, err
	}
	if err := fsync(f); err != nil {
		return sum, fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return sum, err
	}
	if err := os.Rename(tmp, filepath.Join(m, layout.RestoreFile)); err != nil {
		return sum, err
	}
	staged = true
	if err := syncDir(m); err != nil {
		return sum, err
	}
	data, _ := json.Marshal(layout.ResetRequest{Trigger: TriggerRestore, Time: now.UTC(), Restore: layout.RestoreFile})
	return sum, WriteAtomic(m, layout.ResetRequestFile, data)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// roomToUnpack refuses a layer the data filesystem at dir cannot unpack
// at boot: the old upper and the staged copy (already written) stay until
// the unpacked one is complete, and the reserve (layout.ReserveBytes) is
// kept for the running system.
func roomToUnpack(dir string, sum LayerSummary) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if !exists(layout.Meta(dir, layout.ReserveFile)) {
		free -= layout.ReserveBytes
	}
	if sum.Need > free {
		return fmt.Errorf("the backup needs about %d KiB unpacked at the next boot, besides its staged copy and the current changes, and the data partition has %d KiB free (the %d KiB reserve left aside): delete files, or factory-reset first and restore after",
			sum.Need>>10, max(free, 0)>>10, layout.ReserveBytes>>10)
	}
	if st.Files > 0 && uint64(sum.Entries) > st.Ffree {
		return fmt.Errorf("the backup has %d entries and the data partition has %d free inodes: delete files, or factory-reset first and restore after", sum.Entries, st.Ffree)
	}
	return nil
}

// RemoveStaleRestore removes a staged backup no request names (left by a
// power cut in ScheduleRestore or after a restore's request was removed)
// and reports whether there was one. Perform calls it when nothing is
// pending; the init too.
func RemoveStaleRestore(dir string) (bool, error) {
	req, err := Pending(dir)
	if err != nil || req != nil {
		return false, err
	}
	return removeRestore(dir)
}

// removeRestore removes the staged backup and its temporary copy.
func removeRestore(dir string) (bool, error) {
	had := false
	for _, name := range []string{layout.RestoreFile, layout.RestoreNewFile} {
		err := os.Remove(layout.Meta(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return had, err
		}
		had = true
	}
	if !had {
		return false, nil
	}
	return true, syncDir(meta(dir))
}

// checkRestoreName refuses a request's backup name that is not a plain
// name in MetaDir.
func checkRestoreName(name string) error {
	if !filepath.IsLocal(name) || filepath.Base(name) != name {
		return fmt.Errorf("the request names the backup %q, which is not a file name in %s", name, layout.MetaDir)
	}
	return nil
}

// stageRestore unpacks the request's backup into keepNew (created empty).
func stageRestore(m, name, keepNew string) error {
	if err := checkRestoreName(name); err != nil {
		return &BadLayerError{Err: err}
	}
	f, err := os.Open(filepath.Join(m, name))
	if errors.Is(err, fs.ErrNotExist) {
		return &BadLayerError{Err: fmt.Errorf("the staged backup %s is missing", filepath.Join(m, name))}
	}
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = unpackLayer(f, keepNew)
	return err
}

// dropRestore ends a restore whose backup is bad without changing the
// upper: keep.new discarded, a record saying why, the request and the
// backup removed.
func (r *Resetter) dropRestore(req *layout.ResetRequest, start time.Time, bad error) (*layout.ResetRecord, error) {
	m := meta(r.Dir)
	if err := os.RemoveAll(filepath.Join(m, layout.KeepNewDir)); err != nil {
		return nil, err
	}
	rec := &layout.ResetRecord{Trigger: req.Trigger, RequestedAt: req.Time, Failed: bad.Error()}
	if err := r.finish(rec, start); err != nil {
		return nil, err
	}
	return rec, fmt.Errorf("%w: %v", ErrRestoreDropped, bad)
}
