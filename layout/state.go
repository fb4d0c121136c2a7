package layout

import (
	"encoding/json"
	"fmt"
	"time"
)

// Mode is how the root the init handed over keeps changes.
type Mode string

const (
	ModePersistent Mode = "persistent" // upper on the data partition
	ModeVolatile   Mode = "volatile"   // upper on tmpfs: changes are lost at power-off
	ModeFailsafe   Mode = "failsafe"   // asked for: upper on tmpfs, data partition read-only
)

// State is the record of one boot that the init writes to StateFile and
// ovrootctl reads.
type State struct {
	Mode       Mode     `json:"mode"`
	Reason     string   `json:"reason,omitempty"` // why volatile or failsafe
	RootDevice string   `json:"root_device"`
	DataDevice string   `json:"data_device,omitempty"`
	Formatted  bool     `json:"formatted"` // the data partition was blank and was formatted this boot
	Warnings   []string `json:"warnings,omitempty"`
	// DataFull says the data filesystem had no room at boot;
	// ReserveReleased that the reserve was given up for it.
	DataFull        bool `json:"data_full,omitempty"`
	ReserveReleased bool `json:"reserve_released,omitempty"`
	// DataErrorsAtBoot is the data ext4's error count when the boot put
	// the upper on it (/sys/fs/ext4/DEV/errors_count): more later means
	// the filesystem hit errors while running (ovrootctl status).
	DataErrorsAtBoot *int `json:"data_errors_at_boot,omitempty"`
	// Reset is the factory reset performed on this boot, if any.
	Reset *ResetRecord `json:"reset,omitempty"`
	// Slot is the root slot booted, in a two-slot image.
	Slot *SlotState `json:"slot,omitempty"`
	// Verity says the root was checked through dm-verity at boot.
	Verity *VerityState `json:"verity,omitempty"`
	// Layers are the root's stacked layers, bottom first (a root of
	// several layers: layers.go); nil for a one-layer root.
	Layers  []LayerState `json:"layers,omitempty"`
	Timings Timings      `json:"timings_ms"`
}

// Timings of the boot phases in milliseconds.
type Timings struct {
	Total   int64 `json:"total"`
	Modules int64 `json:"modules"`
	Devices int64 `json:"devices"`
	Mounts  int64 `json:"mounts"`
}

// ParseState reads a state record.
func ParseState(data []byte) (State, error) {
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("parse %s: %w", StateFile, err)
	}
	return s, nil
}

// VerityState is the dm-verity check of the root on this boot.
type VerityState struct {
	RootHash string `json:"root_hash"` // hex
	Device   string `json:"device"`    // the mapped device /rom is mounted from
	Blocks   uint64 `json:"blocks"`    // data blocks, all read and checked at boot
	CheckMS  int64  `json:"check_ms"`
}

// ResetRequest is a pending factory reset (MetaDir/ResetRequestFile).
type ResetRequest struct {
	Trigger string    `json:"trigger"`
	Time    time.Time `json:"time"`
	// Restore makes the reset a restore: the name in MetaDir of the
	// staged backup (RestoreFile) that becomes the new upper, in place of
	// the keep-list's copies.
	Restore string `json:"restore,omitempty"`
}

// ResetRecord is a completed factory reset (MetaDir/LastResetFile, and
// State.Reset on the boot that performed it).
type ResetRecord struct {
	Trigger     string    `json:"trigger"`
	RequestedAt time.Time `json:"requested_at"`
	DoneAt      time.Time `json:"done_at"`
	Kept        []string  `json:"kept,omitempty"` // keep-list paths that existed and were carried over
	DurationMS  int64     `json:"duration_ms"`
	Resumed     bool      `json:"resumed,omitempty"` // finished a reset a power cut interrupted
	// Restored says the new upper is a backup (ovrootctl restore), not
	// the keep-list.
	Restored bool `json:"restored,omitempty"`
	// Failed says the request was dropped and nothing changed, and why: a
	// staged backup found unreadable at boot (the old upper stays).
	Failed string `json:"failed,omitempty"`
}

// SlotState is what the init knows at boot about the slot it booted
// (State.Slot; nil for a one-slot image).
type SlotState struct {
	Slot    Slot   `json:"slot"`
	BuildID string `json:"build_id,omitempty"` // from ovroot.build=
	// Trial is set when the loader booted the slot on trial (systemd-boot's
	// LoaderBootCountPath names a counted entry): the boot must be
	// confirmed (mark-good, confirm_after) or the slot is abandoned.
	Trial *Trial `json:"trial,omitempty"`
	// UpperBuild is the build id the data partition's upper was made on;
	// UpperOtherBuild says it differs from BuildID.
	UpperBuild      string `json:"upper_build,omitempty"`
	UpperOtherBuild bool   `json:"upper_other_build,omitempty"`
}

// Trial is a counted boot: the entry file as the loader renamed it.
type Trial struct {
	Entry string `json:"entry"` // e.g. loader/entries/ovroot-b+2-1.conf
	Left  int    `json:"tries_left"`
	Done  int    `json:"tries_done"`
}

// UpperBuild is MetaDir/UpperBuildFile: the build the upper was made on.
type UpperBuild struct {
	BuildID string    `json:"build_id"`
	Slot    Slot      `json:"slot"`
	Time    time.Time `json:"time"`
}

// SlotEvent is one line of MetaDir/SlotLogFile.
type SlotEvent struct {
	Time    time.Time `json:"time"`
	Slot    Slot      `json:"slot"`
	BuildID string    `json:"build_id,omitempty"`
	Event   string    `json:"event"` // "trial-failed", "health-failed", "confirmed", "upgraded", "given-up"
	Reason  string    `json:"reason,omitempty"`
}
