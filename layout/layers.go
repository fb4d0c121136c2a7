package layout

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
)

// Stacked read-only layers (image.toml [[layer]]).
//
// A root of several layers is one blob in the root partition (or slot),
// so that everything that carries a root (the A/B slots, the update
// bundle's root member, its sha256, the dm-verity tree after it) carries
// all its layers unchanged:
//
//	byte 0                       the bottom layer's squashfs, which holds
//	                             LayersFile: the layer table
//	LayersStart(bottom's size)   the next layer's squashfs, and so on, each
//	                             at its table offset (4 KiB aligned) from
//	                             there
//
// The table is inside the bottom squashfs, not beside it: a slot written
// with a one-layer root over an older stacked one keeps the old layers'
// bytes after the new squashfs, and a table found there would bring them
// back. A root without LayersFile is one layer, as every root was before.
//
// The init mounts each layer read-only at LayersDir/<name> and stacks them
// (top layer first) as the overlay's lowers; RomDir is a read-only overlay
// of the same lowers: the merged factory tree, which ovrootctl changes,
// the trust files and the factory reset read as they read a one-layer
// /rom. A whiteout (0/0 character device) or an opaque directory
// (trusted.overlay.opaque=y) in a layer hides what the layers below hold.
const (
	// LayersFile (in the bottom layer's squashfs) is the JSON LayerTable.
	LayersFile = "etc/ovroot/layers.json"
	// LayersDir holds a mount point per layer (in the /run tmpfs, moved
	// into the real root with it by switch_root).
	LayersDir = RunDir + "/layers"
	// LayerAlign is the alignment of every layer after the bottom one.
	LayerAlign = 4096
	// MaxLayers is the most layers a root may stack.
	MaxLayers = 16
)

// LayerTable lists a root's layers, bottom first. Layers[0] is the
// squashfs at byte 0 of the root (Offset and Size 0: it is the one that
// holds the table); each other layer's Offset is counted from
// LayersStart.
type LayerTable struct {
	Layers []LayerEntry `json:"layers"`
}

// LayerEntry is one layer of a root.
type LayerEntry struct {
	Name   string `json:"name"`
	Offset int64  `json:"offset,omitempty"` // from LayersStart
	Size   int64  `json:"size,omitempty"`   // the squashfs's bytes
	// Source says what it was built from, for a person reading the table.
	Source string `json:"source,omitempty"`
}

// LayersStart is where the layers after the bottom one start: its
// squashfs's size (the superblock's bytes_used) rounded up to LayerAlign.
func LayersStart(bottomBytes int64) int64 {
	return (bottomBytes + LayerAlign - 1) / LayerAlign * LayerAlign
}

// maxLayerBytes bounds a layer's offset and size (1 PiB): their sum
// cannot overflow.
const maxLayerBytes = 1 << 50

var layerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// CheckLayerName refuses a name that cannot be a mount point's name or a
// device-mapper name's tail.
func CheckLayerName(name string) error {
	if !layerName.MatchString(name) {
		return fmt.Errorf("layer name %q: want 1 to 32 of a-z, 0-9, _ and -, starting with a letter or digit", name)
	}
	return nil
}

// ParseLayerTable reads and checks a layer table: names valid and unique,
// at least two layers and at most MaxLayers, every layer after the bottom
// one aligned, not empty, and after the one before it.
func ParseLayerTable(data []byte) (LayerTable, error) {
	var t LayerTable
	if err := json.Unmarshal(data, &t); err != nil {
		return t, fmt.Errorf("parse %s: %w", LayersFile, err)
	}
	if n := len(t.Layers); n < 2 || n > MaxLayers {
		return t, fmt.Errorf("%s lists %d layers: want 2 to %d", LayersFile, n, MaxLayers)
	}
	var seen []string
	end := int64(0)
	for i, l := range t.Layers {
		if err := CheckLayerName(l.Name); err != nil {
			return t, fmt.Errorf("%s, layer %d: %w", LayersFile, i+1, err)
		}
		if slices.Contains(seen, l.Name) {
			return t, fmt.Errorf("%s: layer %q listed twice", LayersFile, l.Name)
		}
		seen = append(seen, l.Name)
		if i == 0 {
			if l.Offset != 0 || l.Size != 0 {
				return t, fmt.Errorf("%s: the bottom layer %q is the squashfs holding the table: it has no offset or size", LayersFile, l.Name)
			}
			continue
		}
		switch {
		case l.Size > maxLayerBytes || l.Offset > maxLayerBytes:
			return t, fmt.Errorf("%s: layer %q at offset %d, size %d: past any disk", LayersFile, l.Name, l.Offset, l.Size)
		case l.Size <= 0:
			return t, fmt.Errorf("%s: layer %q has size %d", LayersFile, l.Name, l.Size)
		case l.Offset < end || l.Offset%LayerAlign != 0:
			return t, fmt.Errorf("%s: layer %q at offset %d overlaps the layer below or is not %d-aligned", LayersFile, l.Name, l.Offset, LayerAlign)
		}
		end = l.Offset + l.Size
	}
	return t, nil
}

// LayerState is one mounted layer of this boot's root (State.Layers).
type LayerState struct {
	Name   string `json:"name"`
	Device string `json:"device"` // what it was mounted from
	Offset int64  `json:"offset"` // bytes into the root
	Size   int64  `json:"size"`
}
