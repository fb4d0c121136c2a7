package imagebuild

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ovroot/ovroot/backup"
	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/tmpdir"
	"github.com/ovroot/ovroot/layout"
)

// makeStack makes the root of a stacked image (Spec.Stack, image.toml's
// [[layer]] tables) at out: every layer its own squashfs, the bottom one
// first in the file with the layer table (layout.LayersFile) and the
// additions, every other at its table offset after it (layout/layers.go).
// The layers above the bottom are made first: the table in the bottom
// layer gives their sizes. Their whiteouts are kept for the device's
// overlay (sqOptions.keepWhiteouts). checkTree, when set, is called with
// every layer's tree, top first, once all are made. It returns the entries
// of all layers and what the root was made of.
func makeStack(ctx context.Context, s Spec, out string, checkTree func(dirs ...string) error) (int, string, error) {
	tmp, done, err := tmpdir.Make("stack")
	if err != nil {
		return 0, "", err
	}
	defer done()
	n := len(s.Stack)
	files := make([]string, n)
	trees := make([]string, n)
	table := layout.LayerTable{Layers: make([]layout.LayerEntry, n)}
	// Files only ovroot writes: no layer above the bottom may hold them.
	own := []Addition{{Path: "/" + layout.LayersFile}}
	for _, a := range s.Add {
		if a.Own {
			own = append(own, a)
		}
	}
	entries, off := 0, int64(0)
	build := func(i int, adds []Addition) error {
		l := s.Stack[i]
		files[i] = filepath.Join(tmp, "layer-"+l.Name+".squashfs")
		// A tarball or an image is unpacked there and kept for the init
		// check; a directory is packed (and checked) where it is.
		var implied []string
		o := sqOptions{keepWhiteouts: i > 0, tree: filepath.Join(tmp, "tree-"+l.Name), implied: &implied}
		o.check = func(dir string) error {
			trees[i] = dir
			if i > 0 {
				return checkOwn(dir, own)
			}
			return nil
		}
		k, desc, err := makeSquashfs(ctx, l.Rootfs, s.Arch, files[i], s.Compression, o, adds...)
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.Name, err)
		}
		entries += k
		if len(implied) > 0 && s.Log != nil {
			// overlayfs shows a directory's owner, mode and time from
			// the top layer that has it: docker's flatten keeps those of
			// the layer below.
			sort.Strings(implied)
			if len(implied) > 5 {
				implied = append(implied[:5], fmt.Sprintf("and %d more", len(implied)-5))
			}
			s.Log("warning: layer %s does not list the directories %s: they are stored as root's, 0755, and on the device hide the owner and mode the layers below give them; list them in the tarball (docker's layers do)", l.Name, strings.Join(implied, ", "))
		}
		table.Layers[i] = layout.LayerEntry{Name: l.Name, Source: desc}
		return nil
	}
	for i := 1; i < n; i++ {
		if err := build(i, nil); err != nil {
			return 0, "", err
		}
		fi, err := os.Stat(files[i])
		if err != nil {
			return 0, "", err
		}
		table.Layers[i].Offset, table.Layers[i].Size = off, fi.Size()
		off = layout.LayersStart(off + fi.Size())
	}
	table.Layers[0] = layout.LayerEntry{Name: s.Stack[0].Name}
	data, err := json.MarshalIndent(table, "", "  ")
	if err != nil {
		return 0, "", err
	}
	if _, err := layout.ParseLayerTable(data); err != nil {
		return 0, "", fmt.Errorf("the layer table ovroot made: %w", err) // a bug
	}
	tf := filepath.Join(tmp, "layers.json")
	if err := os.WriteFile(tf, append(data, '\n'), 0o644); err != nil {
		return 0, "", err
	}
	adds := append(s.Add, Addition{Path: "/" + layout.LayersFile, Source: tf, Mode: 0o644, Own: true})
	if err := build(0, adds); err != nil {
		return 0, "", err
	}
	copy(s.Add, adds) // their notes
	if checkTree != nil {
		top := make([]string, n)
		for i := range trees {
			top[n-1-i] = trees[i]
		}
		if err := checkTree(top...); err != nil {
			return 0, "", err
		}
	}
	// The root: the bottom layer, then the others from LayersStart.
	if err := os.Rename(files[0], out); err != nil {
		return 0, "", err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return 0, "", err
	}
	start := layout.LayersStart(fi.Size())
	for i := 1; i < n; i++ {
		if err := copyAt(ctx, out, files[i], start+table.Layers[i].Offset); err != nil {
			return 0, "", fmt.Errorf("layer %s: %w", s.Stack[i].Name, err)
		}
	}
	last := table.Layers[n-1]
	if err := os.Truncate(out, layout.LayersStart(start+last.Offset+last.Size)); err != nil {
		return 0, "", err
	}
	descs := make([]string, n)
	for i, l := range table.Layers {
		descs[i] = l.Name + ": " + l.Source
	}
	return entries, fmt.Sprintf("%d stacked layers, bottom first: %s", n, strings.Join(descs, "; ")), nil
}

// checkOwn refuses a layer that holds a file only ovroot writes (the
// update policy, the trusted keys, the layer table): above the bottom
// layer, where ovroot puts them, it would replace them on the device.
func checkOwn(dir string, own []Addition) error {
	for _, a := range own {
		if _, err := os.Lstat(filepath.Join(dir, a.Path)); err == nil {
			return fmt.Errorf("the layer has %s: ovroot writes it (from image.toml) in the bottom layer; a layer above would replace it: remove it from the layer", a.Path)
		} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
			return err
		}
	}
	return nil
}

// stackTree is the merged tree of stacked layer trees, top first, for the
// init check: a name is the top-most layer's that has it; a whiteout (a
// 0/0 character device) hides it.
func stackTree(dirs []string) *rootfsTree {
	trees := make([]*rootfsTree, len(dirs))
	for i, d := range dirs {
		trees[i] = dirTree(d)
	}
	find := func(rel string) int {
		for i, d := range dirs {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(d, filepath.FromSlash(rel)), &st); err != nil {
				continue
			}
			if backup.IsWhiteout(&st) {
				return -1
			}
			return i
		}
		return -1
	}
	return &rootfsTree{
		lookup: func(rel string) (byte, string, bool) {
			if i := find(rel); i >= 0 {
				return trees[i].lookup(rel)
			}
			return 0, "", false
		},
		head: func(rel string, n int) ([]byte, error) {
			if i := find(rel); i >= 0 {
				return trees[i].head(rel, n)
			}
			return nil, fs.ErrNotExist
		},
	}
}

// rootfsName is the image's rootfs as its warnings name it.
func rootfsName(im *config.Image) string {
	if len(im.Layer) == 0 {
		return im.Rootfs
	}
	names := make([]string, len(im.Layer))
	for i, l := range im.Layer {
		names[i] = l.Name
	}
	return "of layers " + strings.Join(names, ", ")
}

// stackInputs names each [[layer]]'s rootfs as an input ("layer app").
func stackInputs(stack []config.Layer) []Input {
	var in []Input
	for _, l := range stack {
		in = append(in, Input{"layer " + l.Name, l.Rootfs})
	}
	return in
}
