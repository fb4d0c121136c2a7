package boot

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
)

// Modes of the root the init handed over.
const (
	ModePersistent = "persistent" // upper on the data partition
	ModeVolatile   = "volatile"   // upper on tmpfs: changes are lost at power-off
	ModeFailsafe   = "failsafe"   // asked for: upper on tmpfs, data partition read-only
)

// StateFile is where the init records what it did, for ovrootctl status.
var StateFile = filepath.Join(layout.RunDir, "state")

// State is the JSON record of a boot, written to StateFile.
type State struct {
	Mode       string   `json:"mode"`
	Reason     string   `json:"reason,omitempty"` // why volatile
	RootDevice string   `json:"root_device"`
	DataDevice string   `json:"data_device,omitempty"`
	Formatted  bool     `json:"formatted"` // the data partition was blank and was formatted this boot
	Warnings   []string `json:"warnings,omitempty"`
	// Reset is the factory reset performed on this boot, if any.
	Reset   *reset.Record `json:"reset,omitempty"`
	Timings Timings       `json:"timings_ms"`
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
