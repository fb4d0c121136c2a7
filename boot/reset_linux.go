package boot

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
)

// The factory reset's glue: the triggers the init watches (kernel command
// line, reset button), the reset itself (package reset) on the mounted data
// filesystem, and the background deletion of what it retired.

// askForReset notes a reset asked for on this boot: ovroot.reset on the
// kernel command line, or the reset button held during its window.
func (b *Boot) askForReset() {
	b.resetTrigger = ""
	if b.cmdline.Reset {
		b.resetTrigger = reset.TriggerCmdline
		b.Warnf("factory reset asked for on the kernel command line (ovroot.reset)")
	}
	b.watchResetButton()
}

// watchResetButton watches for the reset button during the configured
// boot window (off by default).
func (b *Boot) watchResetButton() {
	r := b.cfg.Reset
	if r.ButtonWindow <= 0 {
		return
	}
	code, err := config.KeyCode(r.ButtonKey)
	if err != nil {
		b.Warnf("reset button: %v", err)
		return
	}
	dev := r.ButtonDevice
	if dev == "" {
		dev = "any input device"
	}
	b.Logf("reset button: hold %s (code %d) on %s for %s within %s for a factory reset", r.ButtonKey, code, dev, r.ButtonHold, r.ButtonWindow)
	held, err := b.Sys.WaitForKey(r.ButtonDevice, code, r.ButtonHold.D(), r.ButtonWindow.D())
	if err != nil {
		b.Warnf("reset button: %v", err)
	}
	if held {
		b.resetTrigger = reset.TriggerButton
		b.Warnf("reset button held for %s: factory reset", r.ButtonHold)
	}
}

// factoryReset stores a reset asked for on this boot (so a power cut cannot
// lose it) and performs any pending reset or restore (ovrootctl restore)
// on the data filesystem mounted at /overlay, before the overlay is
// stacked. An error leaves the request in place for the next boot, except
// a restore whose backup is unreadable, which is dropped with a warning.
func (b *Boot) factoryReset() error {
	dir := b.path(layout.OverlayDir)
	if b.resetTrigger != "" {
		if err := reset.Schedule(dir, b.resetTrigger, b.now()); err != nil {
			return fmt.Errorf("factory reset (trigger=%s): record the request: %w", b.resetTrigger, err)
		}
	}
	req, err := reset.Pending(dir)
	if err != nil {
		return fmt.Errorf("factory reset: read the request: %w", err)
	}
	if req == nil {
		// A backup staged for a restore whose request is gone (a power
		// cut in ovrootctl restore, or after a restore's last step).
		if had, err := reset.RemoveStaleRestore(dir); err != nil {
			b.Warnf("remove a staged backup no restore names: %v", err)
		} else if had {
			b.Logf("removed a staged backup no restore names")
		}
		return nil
	}
	what := "factory reset"
	if req.Restore != "" {
		what = "restore"
	}
	b.Warnf("%s (trigger=%s): starting", what, req.Trigger)
	r := &reset.Resetter{Dir: dir, Keep: b.cfg.Reset.Keep, Now: b.now}
	if d := b.cmdline.ResetStepDelay; d > 0 {
		r.Before = func(step string) error {
			b.Logf("%s step %s (delayed %s)", what, step, d)
			b.sleep(d)
			return nil
		}
	}
	rec, err := r.Perform()
	if errors.Is(err, reset.ErrNoRoom) {
		// Nothing was changed. Going volatile would keep the person from
		// deleting files or withdrawing the request: boot the data as it
		// is, loudly, and try again next boot.
		msg := fmt.Sprintf("%s (trigger=%s) postponed: %v; delete files, or withdraw it with ovrootctl factory-reset --cancel", what, req.Trigger, err)
		b.Warnf("%s", msg)
		b.state.Warnings = append(b.state.Warnings, msg)
		return nil
	}
	if errors.Is(err, reset.ErrRestoreDropped) {
		// The backup is unreadable: retrying cannot help, and failing
		// here would send every boot to the fallback. The old upper is
		// untouched; say so loudly, in the log and in the boot's record.
		msg := fmt.Sprintf("RESTORE FAILED, nothing changed: %v; the request was dropped, take a new backup and restore again", err)
		b.Warnf("%s", msg)
		b.state.Warnings = append(b.state.Warnings, msg)
		b.state.Reset = rec
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s (trigger=%s) failed: %w; the request stays and the next boot tries again", what, req.Trigger, err)
	}
	resumed := ""
	if rec.Resumed {
		resumed = ", finishing an interrupted " + what
	}
	if rec.Restored {
		b.Warnf("restore of a backup (trigger=%s%s) in %d ms", rec.Trigger, resumed, rec.DurationMS)
	} else {
		b.Warnf("factory reset (trigger=%s, kept %d paths%s) in %d ms", rec.Trigger, len(rec.Kept), resumed, rec.DurationMS)
	}
	b.state.Reset = rec
	return nil
}

// collectTrash starts the background deletion of uppers retired by resets.
func (b *Boot) collectTrash() {
	n := reset.TrashCount(b.path(layout.OverlayDir))
	if n == 0 {
		return
	}
	trash := filepath.Join(layout.OverlayDir, layout.MetaDir, layout.TrashDir)
	if err := b.Sys.StartTrashCollector(b.path(trash)); err != nil {
		b.Warnf("start deleting %d retired upper and work trees in %s: %v (tried again next boot)", n, trash, err)
		return
	}
	b.Logf("deleting %d retired upper and work trees in %s in the background", n, trash)
}
