package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ovroot/ovroot/backup"
	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// Change is one path where the running root differs from the factory root.
type Change struct {
	Path string `json:"path"`
	// Kind is "added" (not in the factory root), "modified" (shadows a
	// factory path), "deleted" (a whiteout hides a factory path) or
	// "replaced" (an opaque directory hides the factory directory's content).
	Kind string `json:"kind"`
}

// Changes walks an overlayfs upper directory and classifies each entry
// against the lower (Documentation/filesystems/overlayfs.rst: a whiteout is
// a character device 0/0, an opaque directory has trusted.overlay.opaque=y).
// Entries below an added or replaced directory are not listed separately.
func Changes(upper, lower string) ([]Change, error) {
	var out []Change
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		if rel == "." {
			return nil
		}
		name := "/" + filepath.ToSlash(rel)
		_, lerr := os.Lstat(filepath.Join(lower, rel))
		inLower := lerr == nil
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch {
		case backup.IsWhiteout(&st):
			out = append(out, Change{name, "deleted"})
		case d.IsDir() && opaque(p):
			out = append(out, Change{name, "replaced"})
			return filepath.SkipDir
		case d.IsDir() && inLower:
			// A directory that exists in both is only a container for changes.
		case d.IsDir():
			out = append(out, Change{name, "added"})
			return filepath.SkipDir
		case inLower:
			out = append(out, Change{name, "modified"})
		default:
			out = append(out, Change{name, "added"})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read changes in %s: %w", upper, err)
	}
	return out, nil
}

func opaque(dir string) bool {
	buf := make([]byte, 8)
	for _, attr := range []string{backup.OverlayOpaque, "user.overlay.opaque"} {
		if n, err := unix.Lgetxattr(dir, attr, buf); err == nil && string(buf[:n]) == "y" {
			return true
		}
	}
	return false
}

// upper is the running upper: on the data partition, except in failsafe
// mode, where it is in RAM (the data partition is mounted read-only then).
func (c Context) upper() (string, error) {
	upper := c.path(filepath.Join(layout.OverlayDir, layout.UpperName))
	if st, err := c.readState(); err == nil && st.Mode == layout.ModeFailsafe {
		upper = c.path(filepath.Join(layout.FailsafeDir, layout.UpperName))
	}
	if _, err := os.Stat(upper); errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no overlay upper at %s: was this system booted by ovroot's init?", upper)
	}
	return upper, nil
}

func (c Context) changes(args []string) error {
	fs, asJSON := c.flags("changes", "ovrootctl changes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	upper, err := c.upper()
	if err != nil {
		return err
	}
	list, err := Changes(upper, c.path(layout.RomDir))
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(c.Stdout).Encode(list)
	}
	for _, ch := range list {
		fmt.Fprintf(c.Stdout, "%s %s\n", ch.Letter(), ch.Path)
	}
	return nil
}

// Letter is the kind in docker diff's short form: A (added), C (changed:
// modified, or a directory made opaque), D (deleted).
func (ch Change) Letter() string {
	switch ch.Kind {
	case "added":
		return "A"
	case "deleted":
		return "D"
	}
	return "C"
}
