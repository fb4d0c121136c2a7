package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
)

// The reserve policy: a file of layout.ReserveBytes kept on the data
// filesystem, given up when the filesystem is full so the overlay still
// mounts read-write (it needs room in its work directory), and put back
// once there is room again. A factory reset releases it too (package reset).

// keepHeadroom releases the reserve when the data filesystem is full and
// puts it back when there is room again; a full filesystem is recorded in
// the state for ovrootctl status.
func (b *Boot) keepHeadroom() {
	dir := b.path(layout.OverlayDir)
	reserve := layout.Meta(dir, layout.ReserveFile)
	_, statErr := os.Stat(reserve)
	haveReserve := statErr == nil
	free, err := b.Sys.FreeBytes(dir)
	if err != nil {
		b.Warnf("free space of %s: %v", layout.OverlayDir, err)
		return
	}
	if free >= 8*layout.ReserveBytes {
		if !haveReserve {
			b.putReserveBack(filepath.Dir(reserve))
		}
		return
	}
	// Little room by statfs: does what the overlay needs still fit?
	room, err := b.Sys.CanWrite(dir, layout.ReserveBytes/4)
	if err != nil {
		b.Warnf("free space of %s: %v", layout.OverlayDir, err)
		return
	}
	if room {
		return
	}
	b.state.DataFull = true
	var msg string
	if haveReserve {
		if err := os.Remove(reserve); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.Warnf("data partition full: release the reserve: %v", err)
			return
		}
		b.state.ReserveReleased = true
		msg = fmt.Sprintf("data partition full: released the %d KiB reserve so the root stays writable; delete files to make room", layout.ReserveBytes>>10)
	} else {
		msg = "data partition full and no reserve left to release; delete files to make room"
	}
	b.Warnf("%s", msg)
	b.state.Warnings = append(b.state.Warnings, msg)
}

// putReserveBack writes the reserve: written, not fallocated, so its
// blocks are really taken.
func (b *Boot) putReserveBack(meta string) {
	err := os.MkdirAll(meta, 0o700)
	if err == nil {
		err = reset.WriteAtomic(meta, layout.ReserveFile, make([]byte, layout.ReserveBytes))
	}
	if err != nil {
		b.Warnf("create the reserve %s: %v", filepath.Join(meta, layout.ReserveFile), err)
	}
}
