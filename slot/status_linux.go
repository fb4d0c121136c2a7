package slot

import (
	"fmt"

	"github.com/ovroot/ovroot/layout"
)

// Slot states in SlotInfo.
const (
	StateConfirmed = "confirmed"
	StateTrial     = "trial"
	StateAbandoned = "abandoned"
	StateEmpty     = "empty" // no entry: never written, or an upgrade was interrupted
	StateBroken    = "broken"
)

// SlotInfo is one slot as the boot partition's entries and the slot log
// describe it.
type SlotInfo struct {
	Slot        layout.Slot `json:"slot"`
	Running     bool        `json:"running"`
	State       string      `json:"state"`
	Entry       string      `json:"entry,omitempty"`
	Generation  int         `json:"generation,omitempty"`
	BuildID     string      `json:"build_id,omitempty"`
	TriesLeft   int         `json:"tries_left,omitempty"`
	TriesDone   int         `json:"tries_done,omitempty"`
	LastFailure string      `json:"last_failure,omitempty"` // from the slot log
	// GivenUp: the slot was confirmed, and the init gave it up when its
	// root failed the integrity check (Abandon; the "given-up" event).
	GivenUp bool   `json:"given_up,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Line is the slot's line in ovrootctl status.
func (i SlotInfo) Line() string {
	s := fmt.Sprintf("slot %s: ", i.Slot)
	switch i.State {
	case StateEmpty:
		return s + "empty (no boot entry)"
	case StateBroken:
		return s + "BROKEN entry: " + i.Error
	case StateAbandoned:
		if i.GivenUp {
			return s + fmt.Sprintf("ABANDONED: build %s was confirmed, then failed at boot: %s", i.BuildID, i.LastFailure)
		}
		s += fmt.Sprintf("ABANDONED: build %s was tried %d times and never confirmed", i.BuildID, i.TriesDone)
		if i.LastFailure != "" {
			s += " (last failure: " + i.LastFailure + ")"
		}
		return s
	}
	s += fmt.Sprintf("generation %d, build %s, ", i.Generation, i.BuildID)
	if i.State == StateTrial {
		s += fmt.Sprintf("on trial (%d of %d tries left)", i.TriesLeft, i.TriesLeft+i.TriesDone)
		if i.LastFailure != "" {
			s += " (last failure: " + i.LastFailure + ")"
		}
	} else {
		s += "confirmed"
	}
	if i.Running {
		s += ", running"
	}
	return s
}

// Slots describes both slots from the boot partition (mounted read-only
// for the read) and the slot log.
func (s *System) Slots() ([]SlotInfo, error) {
	d, err := s.findDevice()
	if err != nil {
		return nil, err
	}
	e, err := s.mountESP(d, false)
	if err != nil {
		return nil, err
	}
	ents, err := ListEntries(e.dir)
	if cerr := s.closeESP(e); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	events, _ := ReadEvents(s.slotLog())
	return describe(ents, events, d.slot), nil
}

func describe(ents []SlotEntry, events []layout.SlotEvent, running layout.Slot) []SlotInfo {
	var out []SlotInfo
	for _, sl := range layout.Slots {
		info := SlotInfo{Slot: sl, Running: sl == running, State: StateEmpty}
		mine := ofSlot(ents, sl)
		// A confirmed entry wins over a counted twin a power cut left.
		for _, se := range mine {
			if !se.Name.Counted || info.Entry == "" {
				info.Entry = se.File
				info.TriesLeft, info.TriesDone = se.Name.Left, se.Name.Done
				info.Generation, info.BuildID = se.Entry.Generation, se.Entry.BuildID
				switch {
				case se.Err != nil:
					info.State, info.Error = StateBroken, se.Err.Error()
				case !se.Name.Counted:
					info.State = StateConfirmed
				case se.Name.Abandoned():
					info.State = StateAbandoned
				default:
					info.State = StateTrial
				}
			}
		}
		if info.State == StateAbandoned || info.State == StateTrial {
			for _, ev := range events {
				if ev.Slot == sl && (ev.Event == "trial-failed" || ev.Event == "health-failed" || ev.Event == EventGivenUp) && (ev.BuildID == "" || ev.BuildID == info.BuildID) {
					info.LastFailure = ev.Reason
					info.GivenUp = ev.Event == EventGivenUp && info.State == StateAbandoned
				}
			}
		}
		out = append(out, info)
	}
	return out
}
