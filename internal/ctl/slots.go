package ctl

import (
	"fmt"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
	"github.com/ovroot/ovroot/slot"
)

// system is the device as package slot sees it.
func (c Context) system() *slot.System {
	m := c.Mounter
	if m == nil {
		m = slot.LinuxMounter{}
	}
	return &slot.System{Root: c.Root, Mounter: m, Progress: c.Stderr, Now: c.Now}
}

// upgrade writes an update bundle to the slot not running and makes the
// next boot try it.
func (c Context) upgrade(args []string) error {
	fs, _ := c.flags("upgrade", "ovrootctl upgrade /tmp/new.bundle --reboot")
	wipe := fs.Bool("wipe", false, "also erase every change at the next boot (a factory reset; the keep-list is honoured)")
	reboot := fs.Bool("reboot", false, "reboot into the new slot when done")
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("upgrade: give one bundle (a file or a block device), e.g. ovrootctl upgrade /tmp/new.bundle")
	}
	st, err := c.readState()
	if err != nil {
		return err
	}
	if *wipe && st.Mode != layout.ModePersistent {
		return fmt.Errorf("upgrade --wipe: the data partition is not in use (%s): a factory reset request could not be stored", st.Mode)
	}
	res, err := c.system().Upgrade(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	if res.Warning != "" {
		fmt.Fprintf(c.Stderr, "ovrootctl: warning: %s\n", res.Warning)
	}
	fmt.Fprintf(c.Stdout, "upgrade: slot %s holds build %s (generation %d); the next boot tries it (%d tries)\n", res.Slot, res.BuildID, res.Generation, res.Tries)
	fmt.Fprintf(c.Stdout, "confirm it from the new system with `ovrootctl mark-good`; unconfirmed, the device goes back to slot %s by itself\n", res.Slot.Other())
	if *wipe {
		now := time.Now()
		if c.Now != nil {
			now = c.Now()
		}
		if err := reset.Schedule(c.path(layout.OverlayDir), reset.TriggerCtl, now); err != nil {
			return fmt.Errorf("upgrade --wipe: the slot is written, but the factory reset could not be scheduled: %w", err)
		}
		fmt.Fprintln(c.Stdout, "factory reset scheduled for the next boot (ovrootctl factory-reset --cancel withdraws it)")
	}
	if !*reboot {
		return nil
	}
	return c.reboot()
}

// markGood confirms the running slot.
func (c Context) markGood(args []string) error {
	fs, _ := c.flags("mark-good", "ovrootctl mark-good")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := c.system().MarkGood()
	if err != nil {
		return fmt.Errorf("mark-good: %w", err)
	}
	if res.Warning != "" {
		fmt.Fprintf(c.Stderr, "ovrootctl: warning: %s\n", res.Warning)
	}
	if res.From == "" {
		fmt.Fprintf(c.Stdout, "slot %s (build %s) is confirmed already\n", res.Slot, res.BuildID)
		return nil
	}
	fmt.Fprintf(c.Stdout, "slot %s (build %s) confirmed: %s is now %s\n", res.Slot, res.BuildID, res.From, res.Entry)
	return nil
}

// reorder puts flags before the positional arguments (flag stops at the
// first of those): `upgrade FILE --reboot` works as written.
func reorder(args []string) []string {
	var flags, rest []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
		} else {
			rest = append(rest, a)
		}
	}
	return append(flags, rest...)
}

// slotLines are the A/B lines of ovrootctl status.
func slotLines(st layout.State, slots []slot.SlotInfo, slotsErr error) []string {
	s := st.Slot
	if s == nil {
		return nil
	}
	var out []string
	l := fmt.Sprintf("slot:      %s, build %s", s.Slot, s.BuildID)
	confirmedSince := false // mark-good or confirm_after during this boot
	for _, i := range slots {
		if i.Running && i.State == slot.StateConfirmed && s.Trial != nil {
			confirmedSince = true
		}
	}
	if confirmedSince {
		l += ", confirmed (this boot started as a trial)"
	} else if s.Trial != nil {
		l += fmt.Sprintf(", ON TRIAL (%d tries left): confirm with `ovrootctl mark-good`", s.Trial.Left)
	} else {
		l += ", confirmed"
	}
	out = append(out, l)
	if s.UpperOtherBuild {
		out = append(out, fmt.Sprintf("upper:     made on build %s, another build than this root's: files changed there hide this build's", s.UpperBuild))
	} else if s.UpperBuild != "" {
		out = append(out, fmt.Sprintf("upper:     made on build %s", s.UpperBuild))
	}
	if slotsErr != nil {
		out = append(out, fmt.Sprintf("slots:     cannot read the boot entries: %v", slotsErr))
	}
	for _, i := range slots {
		out = append(out, "  "+i.Line())
	}
	return out
}
