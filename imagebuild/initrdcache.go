package imagebuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/ovroot/ovroot/initramfs"
	"github.com/ovroot/ovroot/internal/kmod"
)

// initrdCache keeps built initramfs archives in Dir, named by a hash of
// everything that decides their bytes: the program building them (its
// code decides the layout and the compression), the arch, the init config,
// and the path, mode and content of every file carried, the modules and
// their load order included. initramfs.Build gives the same bytes for the
// same inputs, so a hit is byte for byte the archive a build would write;
// the gzip -9 of some megabytes is then skipped. Entries are written under
// a temporary name and renamed into place; the Keep newest stay.
type initrdCache struct {
	Dir  string
	Keep int
}

// selfHash hashes the running executable once: a rebuilt ovroot (another
// initramfs format) never reads an older one's entries.
var selfHash = sync.OnceValues(func() ([]byte, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(exe)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
})

// key names the archive o would give; it also returns the report a hit
// stands for (modules in load order, release).
func (c initrdCache) key(o initramfs.Options, ix *kmod.Index) (string, *initramfs.Report, error) {
	self, err := selfHash()
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	h.Write(self)
	fmt.Fprintf(h, "\x00arch %s\x00config %t %d\x00", o.Arch, o.InitConfig != nil, len(o.InitConfig))
	h.Write(o.InitConfig)
	file := func(name string, mode os.FileMode, src string) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "\x00file %s %o %d\x00", name, mode, len(data))
		h.Write(data)
		return nil
	}
	if err := file("/init", 0o755, o.InitBinary); err != nil {
		return "", nil, fmt.Errorf("init binary: %w", err)
	}
	rep := &initramfs.Report{}
	if o.ModulesDir != "" {
		mods, err := ix.Closure(o.Modules...)
		if err != nil {
			return "", nil, err
		}
		rep.Release = ix.Release()
		fmt.Fprintf(h, "\x00release %s\x00", rep.Release)
		for _, m := range mods {
			if err := file(m.Path, 0o644, filepath.Join(o.ModulesDir, filepath.FromSlash(m.Path))); err != nil {
				return "", nil, fmt.Errorf("module %s: %w", m.Name, err)
			}
			rep.Modules = append(rep.Modules, m.Name)
		}
	}
	for _, f := range o.Files {
		if f.Link != "" {
			fmt.Fprintf(h, "\x00link %s %s\x00", f.Path, f.Link)
			continue
		}
		if err := file(f.Path, f.Mode.Perm(), f.Source); err != nil {
			return "", nil, err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32], rep, nil
}

// build writes the archive for o to w, from the cache when it has it (hit
// reports which). Without a usable cache it is initramfs.Build.
func (c initrdCache) build(ctx context.Context, o initramfs.Options, ix *kmod.Index, w io.Writer) (rep *initramfs.Report, hit bool, err error) {
	if c.Dir == "" || o.InitBinary == "" || (o.ModulesDir != "" && ix == nil) {
		rep, err := initramfs.Build(ctx, o, w)
		return rep, false, err
	}
	key, want, err := c.key(o, ix)
	if err != nil {
		return nil, false, err
	}
	entry := filepath.Join(c.Dir, key+".cpio.gz")
	if f, err := os.Open(entry); err == nil {
		defer f.Close()
		n, err := io.Copy(w, f)
		if err != nil {
			return nil, false, fmt.Errorf("copy cached %s: %w", entry, err)
		}
		want.Bytes = n
		now := time.Now()
		os.Chtimes(entry, now, now) // most recently used, for pruning
		return want, true, nil
	}
	// A miss: build, writing the cache entry beside the output.
	var tmp *os.File
	if os.MkdirAll(c.Dir, 0o755) == nil {
		tmp, _ = os.CreateTemp(c.Dir, ".tmp-")
	}
	out := w
	if tmp != nil {
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		out = io.MultiWriter(w, tmp)
	}
	rep, err = initramfs.Build(ctx, o, out)
	if err != nil {
		return nil, false, err
	}
	if tmp != nil && tmp.Chmod(0o644) == nil && tmp.Close() == nil && os.Rename(tmp.Name(), entry) == nil {
		prune(c.Dir, ".gz", c.Keep)
	}
	return rep, false, nil
}

// prune removes all but the keep most recently used entries (files named
// *ext) of a cache directory.
func prune(dir, ext string, keep int) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type e struct {
		name string
		mod  int64
	}
	var list []e
	for _, d := range ents {
		if filepath.Ext(d.Name()) != ext || d.Name()[0] == '.' {
			continue
		}
		if fi, err := d.Info(); err == nil {
			list = append(list, e{d.Name(), fi.ModTime().UnixNano()})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].mod > list[j].mod })
	for _, x := range list[min(len(list), max(keep, 1)):] {
		os.Remove(filepath.Join(dir, x.name))
	}
}
