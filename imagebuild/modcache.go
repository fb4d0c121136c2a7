package imagebuild

import (
	"bytes"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ovroot/ovroot/internal/kmod"
)

// moduleIndexCache keeps the module index of a modules directory in Dir,
// named by a hash of the program reading it and of every module file's
// identity: path, size, modification and change time, inode. Reading the
// .modinfo of Debian's 4000 modules takes a quarter of a second, as long
// as the rest of a small build's checks together; listing and stat'ing
// them takes a tenth of that. Any write to a module changes its ctime, so
// an edited, replaced or added module is a miss, as it is for make and git's
// index. Without a Dir it reads the modules every time.
type moduleIndexCache struct {
	Dir  string
	Keep int
}

// cachedModules is what a cache entry holds: NewIndex's inputs.
type cachedModules struct {
	Modules []kmod.Module
	Builtin []string
}

// load returns the index of dir, from the cache when it holds it.
func (c moduleIndexCache) load(dir string) (*kmod.Index, error) {
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	if c.Dir == "" {
		return kmod.LoadIndex(dir)
	}
	key, err := c.key(dir)
	if err != nil {
		// Unreadable for the key, unreadable for the index: its error
		// names the file.
		return kmod.LoadIndex(dir)
	}
	entry := filepath.Join(c.Dir, key+".gob")
	if data, err := os.ReadFile(entry); err == nil {
		var m cachedModules
		if gob.NewDecoder(bytes.NewReader(data)).Decode(&m) == nil && len(m.Modules) > 0 {
			now := time.Now()
			os.Chtimes(entry, now, now) // most recently used, for pruning
			return kmod.NewIndex(dir, m.Modules, m.Builtin), nil
		}
	}
	mods, builtin, err := kmod.ReadModules(dir)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if gob.NewEncoder(&buf).Encode(cachedModules{mods, builtin}) == nil && os.MkdirAll(c.Dir, 0o755) == nil {
		if tmp, err := os.CreateTemp(c.Dir, ".tmp-"); err == nil {
			_, werr := tmp.Write(buf.Bytes())
			if cerr := tmp.Close(); werr == nil && cerr == nil && os.Chmod(tmp.Name(), 0o644) == nil && os.Rename(tmp.Name(), entry) == nil {
				prune(c.Dir, ".gob", c.Keep)
			}
			os.Remove(tmp.Name())
		}
	}
	return kmod.NewIndex(dir, mods, builtin), nil
}

// key hashes the program (another ovroot may read modules differently)
// and the identity of every file that decides the index.
func (c moduleIndexCache) key(dir string) (string, error) {
	self, err := selfHash()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(self)
	fmt.Fprintf(h, "\x00dir %s\x00", dir)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() || !(strings.Contains(name, ".ko") || name == "modules.builtin") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat", p)
		}
		fmt.Fprintf(h, "%s\x00%d %d.%d %d.%d %d %d\x00", p[len(dir):], fi.Size(),
			st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec, st.Ino, st.Dev)
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}
