package slot

import (
	"errors"
	"fmt"
	"os"

	"github.com/ovroot/ovroot/layout"
)

// MarkGoodResult says what MarkGood did.
type MarkGoodResult struct {
	Slot    layout.Slot
	BuildID string
	From    string // the counted entry renamed ("" when already confirmed)
	Entry   string // the confirmed entry
	Warning string // the confirmation stands, but the slot log was not written
	Health  string // what the health checks said, when they ran
}

// MarkGood confirms the running slot: its counted entry ovroot-<s>+L-D.conf
// is renamed ovroot-<s>.conf (the loader never counts it again, so power
// cuts never abandon it) and a "confirmed" event is logged. Confirming a
// confirmed slot changes nothing and is not an error.
func (s *System) MarkGood() (MarkGoodResult, error) {
	d, err := s.findDevice()
	if err != nil {
		return MarkGoodResult{}, err
	}
	res := MarkGoodResult{Slot: d.slot, BuildID: d.state.Slot.BuildID, Entry: Name{Slot: d.slot}.FileName()}
	if d.state.Slot.Trial != nil {
		if err := s.healthGate(d, &res); err != nil {
			return res, err
		}
	}
	e, err := s.mountESP(d, true)
	if err != nil {
		return res, err
	}
	err = s.markGood(d, e, &res)
	if cerr := s.closeESP(e); err == nil {
		err = cerr
	}
	if err != nil {
		return res, err
	}
	// Tell the trial watchdog keeper (RAM: a reboot forgets it, as it
	// should).
	if err := os.WriteFile(s.path(layout.ConfirmedFile), []byte(res.BuildID+"\n"), 0o644); err != nil {
		res.Warning = joinWarning(res.Warning, "the trial watchdog was not told: "+err.Error())
	}
	// The slot is confirmed: so is its version, from now on the oldest
	// this device installs (recorded after the entry: a power cut between
	// the two leaves it to the next mark-good or upgrade, which record it
	// again).
	if err := s.recordConfirmed(d.state); err != nil {
		res.Warning = joinWarning(res.Warning, err.Error())
	}
	if res.From == "" {
		return res, nil
	}
	ev := layout.SlotEvent{Time: s.now().UTC(), Slot: d.slot, BuildID: res.BuildID, Event: "confirmed"}
	if err := s.appendEvent(d.state, ev); err != nil {
		res.Warning = joinWarning(res.Warning, err.Error())
	}
	return res, nil
}

// healthGate runs the health checks before a slot that booted on trial
// is confirmed (a slot confirmed earlier in this boot is not checked
// again), and refuses on a failure: the slot stays on trial.
func (s *System) healthGate(d device, res *MarkGoodResult) error {
	slots, err := s.Slots()
	if err != nil {
		return err
	}
	for _, i := range slots {
		if i.Running && i.State == StateConfirmed {
			return nil
		}
	}
	h, err := s.runHealth(d.state)
	if err != nil {
		return err
	}
	res.Health = h.Summary()
	if h.Passed {
		return nil
	}
	ev := layout.SlotEvent{Time: s.now().UTC(), Slot: d.slot, BuildID: d.state.Slot.BuildID, Event: "health-failed", Reason: h.Summary()}
	if err := s.appendEvent(d.state, ev); err != nil {
		res.Warning = joinWarning(res.Warning, err.Error())
	}
	return fmt.Errorf("slot %s stays on trial: %s: %w", d.slot, h.Summary(), ErrHealth)
}

func (s *System) markGood(d device, e *esp, res *MarkGoodResult) error {
	ents, err := ListEntries(e.dir)
	if err != nil {
		return err
	}
	mine := ofSlot(ents, d.slot)
	if len(mine) == 0 {
		return fmt.Errorf("no boot entry for the running slot %s in %s on %s", d.slot, layout.EntriesDir, d.esp.Dev())
	}
	dir := e.entriesDir()
	if _, ok := ParseEnvName(mine[0].File); ok {
		res.Entry = mine[0].File
	}
	confirmed := res.Entry
	var counted []SlotEntry
	haveConfirmed := false
	for _, se := range mine {
		if se.Err != nil {
			return se.Err
		}
		if b := d.state.Slot.BuildID; b != "" && se.Entry.BuildID != b {
			return fmt.Errorf("entry %s boots build %s, but this boot is build %s: not confirming it", se.File, se.Entry.BuildID, b)
		}
		if se.Name.Counted {
			counted = append(counted, se)
		} else {
			haveConfirmed = true
		}
	}
	if haveConfirmed {
		// U-Boot: markers a power cut left after the entry was confirmed.
		if err := s.removeMarkers(dir, d.slot); err != nil {
			return err
		}
		// Confirmed already; a counted twin is what a power cut in the
		// middle of a rename on FAT can leave: drop it.
		for _, se := range counted {
			if err := s.removeFile(dir, se.File); err != nil {
				return fmt.Errorf("remove %s: %w", se.File, err)
			}
		}
		return nil
	}
	if len(counted) != 1 {
		return errors.New("more than one counted entry for the running slot: " + counted[0].File + ", " + counted[1].File)
	}
	c := counted[0]
	if _, ok := ParseEnvName(c.File); ok {
		// U-Boot: the entry again with tries 0, then its markers go.
		err := s.replaceText(dir, c.File, c.Entry.Env(0))
		if err == nil {
			err = s.removeMarkers(dir, d.slot)
		}
		if err != nil {
			return fmt.Errorf("confirm slot %s: %w", d.slot, err)
		}
		res.From = fmt.Sprintf("%s with %d of %d tries used", c.File, c.Name.Done, c.Name.Done+c.Name.Left)
		res.Entry = c.File + " with tries 0"
		return nil
	}
	if err := s.renameFile(dir, c.File, confirmed); err != nil {
		return fmt.Errorf("confirm slot %s: %w", d.slot, err)
	}
	res.From = c.File
	return nil
}
