package slot

import (
	"errors"
	"fmt"

	"github.com/ovroot/ovroot/layout"
)

// ErrNoFallback: the running slot cannot be given up, because the other
// slot has no confirmed entry to boot instead.
var ErrNoFallback = errors.New("no confirmed slot to fall back to")

// EventGivenUp is the slot log's event for a confirmed slot the init gave
// up (Abandon), its reason the integrity failure.
const EventGivenUp = "given-up"

// AbandonResult says what Abandon did.
type AbandonResult struct {
	Slot  layout.Slot // the slot given up (the running one)
	Other layout.Slot // the slot the loader boots next
	From  string      // the entry changed
	To    string      // what it became
}

// Abandon gives up the running, confirmed slot when its root is found
// damaged at boot (the init, on a root integrity failure): its entry
// becomes one with no tries left, exactly what a trial that used all its
// tries looks like, so the loader boots the other slot from the next boot
// on. It does so only when the other slot has a confirmed entry: a slot
// is never left for one that was never known good (ErrNoFallback; the
// caller then stops in the emergency shell, saying why).
//
// systemd-boot: ovroot-X.conf is renamed ovroot-X+0-1.conf. U-Boot: the
// marker ovroot-X.try1 is written, then the entry again with tries 1.
// Both are single crash-safe steps in the scheme's own order: a power cut
// before the last one leaves the slot confirmed, and the next boot finds
// the damage again and does it again.
func (s *System) Abandon() (AbandonResult, error) {
	d, err := s.findDevice()
	if err != nil {
		return AbandonResult{}, err
	}
	res := AbandonResult{Slot: d.slot, Other: d.slot.Other()}
	if d.state.Slot.Trial != nil {
		return res, fmt.Errorf("slot %s is on trial: the loader falls back by itself when its tries are used", d.slot)
	}
	e, err := s.mountESP(d, true)
	if err != nil {
		return res, err
	}
	err = s.abandon(d, e, &res)
	if cerr := s.closeESP(e); err == nil {
		err = cerr
	}
	return res, err
}

func (s *System) abandon(d device, e *esp, res *AbandonResult) error {
	ents, err := ListEntries(e.dir)
	if err != nil {
		return err
	}
	var fallback *SlotEntry
	for _, se := range ofSlot(ents, res.Other) {
		if se.Err == nil && !se.Name.Counted {
			fallback = &se
		}
	}
	if fallback == nil {
		return fmt.Errorf("slot %s: %w", res.Other, ErrNoFallback)
	}
	var mine *SlotEntry
	for _, se := range ofSlot(ents, d.slot) {
		if se.Err == nil && !se.Name.Counted {
			mine = &se
		}
	}
	if mine == nil {
		return fmt.Errorf("no confirmed boot entry for the running slot %s in %s", d.slot, layout.EntriesDir)
	}
	if b := d.state.Slot.BuildID; b != "" && mine.Entry.BuildID != b {
		return fmt.Errorf("entry %s boots build %s, but this boot is build %s: not changing it", mine.File, mine.Entry.BuildID, b)
	}
	dir := e.entriesDir()
	res.From = mine.File
	if _, ok := ParseEnvName(mine.File); ok {
		// U-Boot: one marker, then the entry with one try, which that
		// marker has used.
		if err := s.replaceText(dir, MarkerName(d.slot, 1), "1"); err != nil {
			return fmt.Errorf("give up slot %s: %w", d.slot, err)
		}
		if err := s.replaceText(dir, mine.File, mine.Entry.Env(1)); err != nil {
			return fmt.Errorf("give up slot %s: %w", d.slot, err)
		}
		res.To = mine.File + " with its 1 try used"
		return nil
	}
	to := Name{Slot: d.slot, Counted: true, Left: 0, Done: 1}.FileName()
	if err := s.renameFile(dir, mine.File, to); err != nil {
		return fmt.Errorf("give up slot %s: %w", d.slot, err)
	}
	res.To = to
	return nil
}
