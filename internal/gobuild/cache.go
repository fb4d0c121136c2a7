package gobuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ovroot/ovroot"
	"github.com/ovroot/ovroot/layout"
)

// Set is a group of programs compiled together with one go build. Each
// program is named after the last element of its package path.
type Set struct {
	Name string
	Pkgs []string
	Tags []string // go build -tags; a set's name must differ when its tags do
}

// Programs are the file names the set's go build writes.
func (s Set) Programs() []string {
	var names []string
	for _, p := range s.Pkgs {
		names = append(names, path.Base(p))
	}
	return names
}

// URoot is where u-root's commands live (listed as tools in go.mod, so
// go.sum pins their dependencies).
const URoot = "github.com/u-root/u-root/cmds/"

// Device is what an image can carry: the init (which is also the
// emergency shell and its commands, package eshell) and ovrootctl. They
// are compiled together: one go build is cheaper than two.
var Device = Set{Name: "device", Pkgs: []string{"./cmd/init", "./cmd/ovrootctl"}}

// DeviceNoNet is Device without the network code in ovrootctl (the
// ovroot_nonet tag: no net/http, no TLS, 3 MB less), for images that never
// fetch updates over the network. The tag changes nothing in the init.
var DeviceNoNet = Set{Name: "device-nonet", Pkgs: Device.Pkgs, Tags: []string{"ovroot_nonet"}}

// CacheDir is ovroot's cache: $OVROOT_CACHE, else ovroot/ in the user's
// cache directory (os.UserCacheDir: $XDG_CACHE_HOME or ~/.cache on Linux).
// Deleting it is always safe.
func CacheDir() (string, error) {
	if d := os.Getenv("OVROOT_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for ovroot (set OVROOT_CACHE): %w", err)
	}
	return filepath.Join(d, "ovroot"), nil
}

// Cache compiles sets of programs from the embedded source and keeps them
// in Dir/build/<source key>/:
//
//	src/                      the extracted module source
//	<go version>/<arch>-<GOARM etc.>/<set>/ the compiled programs
//
// Every entry is written under a temporary name and renamed into place, so
// builds running at once (two terminals, parallel tests) never see half an
// entry; the loser of a race throws its copy away.
type Cache struct {
	Dir string                           // "" = CacheDir()
	Log func(format string, args ...any) // nil = silent
	Go  string                           // the go command; "" = "go" from PATH
	Src fs.FS                            // the module source; nil = the embedded ovroot.Source
}

// Programs returns the directory holding set's programs for arch,
// compiling them first unless the cache has them.
func (c *Cache) Programs(ctx context.Context, arch layout.Arch, set Set) (string, error) {
	if !arch.Valid() {
		return "", fmt.Errorf("unknown arch %q", arch)
	}
	goCmd := c.Go
	if goCmd == "" {
		goCmd = "go"
	}
	if _, err := exec.LookPath(goCmd); err != nil {
		return "", errNoGo(goCmd, err)
	}
	files, err := SourceFiles(c.src())
	if err != nil {
		return "", err
	}
	root := c.Dir
	if root == "" {
		if root, err = CacheDir(); err != nil {
			return "", err
		}
	}
	base := filepath.Join(root, "build", SourceKey(files))
	src := filepath.Join(base, "src")
	if err := extract(files, src); err != nil {
		return "", fmt.Errorf("extract the embedded source into %s: %w", src, err)
	}
	ver, err := goVersion(ctx, goCmd, src)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(base, ver, targetKey(arch), set.Name)
	unlock := lock(dir)
	defer unlock()
	if complete(dir, set) {
		c.logf("go: %s programs for %s from the cache (%s)", set.Name, arch, dir)
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-"+set.Name+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	t := time.Now()
	c.logf("go: compiling %s for %s (%s, once per ovroot version and arch)", strings.Join(set.Programs(), ", "), arch, ver)
	if err := build(ctx, goCmd, arch, set.Tags, src, tmp+"/", set.Pkgs...); err != nil {
		return "", err
	}
	if err := publish(tmp, dir); err != nil {
		return "", err
	}
	c.logf("go: compiled in %s, cached in %s", time.Since(t).Round(time.Millisecond), dir)
	return dir, nil
}

func (c *Cache) logf(format string, args ...any) {
	if c.Log != nil {
		c.Log(format, args...)
	}
}

func (c *Cache) src() fs.FS {
	if c.Src != nil {
		return c.Src
	}
	return ovroot.Source
}

// complete reports whether dir holds every program of set.
func complete(dir string, set Set) bool {
	for _, p := range set.Programs() {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// publish renames tmp to dir; when another build put dir there first, its
// copy (the same bytes: the build is reproducible) is kept.
func publish(tmp, dir string) error {
	err := os.Rename(tmp, dir)
	if err == nil {
		return nil
	}
	if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
		return nil
	}
	return fmt.Errorf("cache %s: %w", dir, err)
}

// locks serializes builds of one cache entry within this process (parallel
// tests), so the same programs are not compiled twice at once; between
// processes publish's rename is what keeps the cache whole.
var locks sync.Map // dir -> *sync.Mutex

func lock(dir string) (unlock func()) {
	v, _ := locks.LoadOrStore(dir, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// goVersion names the toolchain that builds in src (go1.26.8): the same
// source compiled by another Go gives other bytes, so it is part of the
// cache key. It is asked in src, whose go.mod may select a newer
// toolchain (GOTOOLCHAIN=auto) than the one on PATH.
func goVersion(ctx context.Context, goCmd, src string) (string, error) {
	cmd := exec.CommandContext(ctx, goCmd, "env", "GOVERSION")
	cmd.Dir = src
	cmd.Env = goEnv("")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s env GOVERSION: %w\n%s", goCmd, err, strings.TrimSpace(stderr.String()))
	}
	v := strings.TrimSpace(string(out))
	if v == "" || strings.ContainsAny(v, `/\ `) {
		return "", fmt.Errorf("%s env GOVERSION printed %q", goCmd, v)
	}
	return v, nil
}

// SourceFiles reads the module source from fsys: go.mod, go.sum and every
// .go file but tests (which the device programs do not need, and whose
// edits must not invalidate the cache).
func SourceFiles(fsys fs.FS) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files[p] = data
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("embedded source: %w", err)
	}
	if _, ok := files["go.mod"]; !ok {
		return nil, errors.New("embedded source has no go.mod")
	}
	return files, nil
}

// SourceKey names a source tree: a hash of every file's path and content.
func SourceKey(files map[string][]byte) string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(files[n]))
		h.Write(files[n])
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// extract writes files into dir unless it is there already; it is written
// beside dir and renamed into place.
func extract(files map[string][]byte, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-src-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for name, data := range files {
		p := filepath.Join(tmp, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
	}
	return publish(tmp, dir)
}
