package gobuild

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/ovroot/ovroot"
	"github.com/ovroot/ovroot/layout"
)

// Every package of this module that the device programs (and the demo's
// init) import, on every arch, is embedded with all its non-test files:
// otherwise an installed ovroot cannot build them (go list -deps is the
// truth).
func TestEmbeddedSourceCoversDeviceDeps(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not on PATH")
	}
	root, err := FindSource(".")
	if err != nil {
		t.Fatal(err)
	}
	files, err := SourceFiles(ovroot.Source)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"go.mod", "go.sum"} {
		if _, ok := files[want]; !ok {
			t.Errorf("%s is not embedded", want)
		}
	}
	for _, arch := range layout.Arches {
		cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Dir,Module,GoFiles,IgnoredGoFiles,SFiles,EmbedFiles", "./cmd/init", "./cmd/ovrootctl", "./internal/demo/init")
		cmd.Dir = root
		cmd.Env = goEnv(arch)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list for %s: %v", arch, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		n := 0
		for dec.More() {
			var p struct {
				ImportPath, Dir                             string
				Module                                      *struct{ Path string }
				GoFiles, IgnoredGoFiles, SFiles, EmbedFiles []string
			}
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			if p.Module == nil || p.Module.Path != ModulePath {
				continue
			}
			n++
			rel, err := filepath.Rel(root, p.Dir)
			if err != nil {
				t.Fatal(err)
			}
			// Ignored files too: they are another GOOS's, and the key
			// must not depend on which arch listed them.
			for _, f := range append(append(append(p.GoFiles, p.IgnoredGoFiles...), p.SFiles...), p.EmbedFiles...) {
				if strings.HasSuffix(f, "_test.go") {
					continue
				}
				name := filepath.ToSlash(filepath.Join(rel, f))
				if _, ok := files[name]; !ok {
					t.Errorf("%s (package %s, a dependency of the device programs on %s) is not embedded: add %s/*.go to source.go", name, p.ImportPath, arch, filepath.ToSlash(rel))
				}
			}
		}
		if n < 3 {
			t.Errorf("go list found %d packages of %s for %s; want cmd/init, cmd/ovrootctl and their imports", n, ModulePath, arch)
		}
	}
	for name := range files {
		if strings.HasSuffix(name, "_test.go") {
			t.Errorf("SourceFiles kept the test file %s", name)
		}
	}
}

func TestSourceKey(t *testing.T) {
	base := fstest.MapFS{
		"go.mod":           {Data: []byte("module x\n")},
		"cmd/init/main.go": {Data: []byte("package main\n")},
		"boot/a_test.go":   {Data: []byte("package boot\n")},
	}
	with := func(name, data string) fstest.MapFS {
		m := fstest.MapFS{}
		for k, v := range base {
			m[k] = v
		}
		m[name] = &fstest.MapFile{Data: []byte(data)}
		return m
	}
	key := func(fsys fstest.MapFS) string {
		t.Helper()
		files, err := SourceFiles(fsys)
		if err != nil {
			t.Fatal(err)
		}
		return SourceKey(files)
	}
	k0 := key(base)
	cases := []struct {
		name string
		fsys fstest.MapFS
		same bool
	}{
		{"same files", with("go.mod", "module x\n"), true},
		{"a test file changed", with("boot/a_test.go", "package boot // edited\n"), true},
		{"a test file added", with("boot/b_test.go", "package boot\n"), true},
		{"a source file changed", with("cmd/init/main.go", "package main // edited\n"), false},
		{"a source file added", with("boot/new.go", "package boot\n"), false},
		{"go.mod changed", with("go.mod", "module x\n\ngo 1.26\n"), false},
		// The content moved between names: the names are part of the key.
		{"renamed", fstest.MapFS{"go.mod": base["go.mod"], "cmd/init/init.go": base["cmd/init/main.go"]}, false},
	}
	for _, tc := range cases {
		if got := key(tc.fsys); (got == k0) != tc.same {
			t.Errorf("%s: key %s vs %s, want same=%v", tc.name, got, k0, tc.same)
		}
	}
	if _, err := SourceFiles(fstest.MapFS{"boot/a.go": {Data: []byte("package boot")}}); err == nil {
		t.Error("SourceFiles without go.mod: no error")
	}
}

// fakeGo writes a go command that answers "env GOVERSION" and, for
// "build", writes each program of the -o directory and counts the call in
// dir/builds.
func fakeGo(t *testing.T) (goCmd string, builds func() int) {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
if [ "$1" = env ]; then echo go1.99.9; exit 0; fi
[ "$1" = build ] || exit 3
echo x >> "` + dir + `/builds"
while [ "$1" != -o ]; do shift; done
out=$2; shift 2
[ -f go.mod ] || { echo "no go.mod in $PWD" >&2; exit 4; }
for p in "$@"; do echo "$GOARCH GOARM=$GOARM $p" > "$out/$(basename "$p")"; done
`
	goCmd = filepath.Join(dir, "go")
	if err := os.WriteFile(goCmd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return goCmd, func() int {
		data, _ := os.ReadFile(filepath.Join(dir, "builds"))
		return strings.Count(string(data), "x")
	}
}

// A set is compiled once per source, Go version and arch, even by builds
// running at once; anything else comes from the cache.
func TestCacheCompilesOnce(t *testing.T) {
	goCmd, builds := fakeGo(t)
	dir := t.TempDir()
	src := fstest.MapFS{"go.mod": {Data: []byte("module x\n")}, "cmd/init/main.go": {Data: []byte("package main\n")}}
	set := Set{Name: "s", Pkgs: []string{"./cmd/init", URoot + "exp/rush"}}
	var logs []string
	var mu sync.Mutex
	c := &Cache{Dir: dir, Go: goCmd, Src: src, Log: func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, fmt.Sprintf(f, a...))
	}}
	ctx := context.Background()

	var wg sync.WaitGroup
	dirs := make([]string, 4)
	errs := make([]error, 4)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = c.Programs(ctx, layout.X86_64, set)
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if dirs[i] != dirs[0] {
			t.Errorf("concurrent calls gave %s and %s", dirs[i], dirs[0])
		}
	}
	if n := builds(); n != 1 {
		t.Errorf("4 concurrent calls ran go build %d times, want 1", n)
	}
	for _, p := range set.Programs() {
		data, err := os.ReadFile(filepath.Join(dirs[0], p))
		if err != nil || !strings.HasPrefix(string(data), "amd64 GOARM= ") {
			t.Errorf("program %s: %q, %v", p, data, err)
		}
	}
	// No temporary entries left behind.
	left, _ := filepath.Glob(filepath.Join(dir, "build", "*", "*", "*", ".tmp-*"))
	left2, _ := filepath.Glob(filepath.Join(dir, "build", "*", ".tmp-*"))
	if len(left)+len(left2) > 0 {
		t.Errorf("temporary entries left in the cache: %v %v", left, left2)
	}

	// Another process (another Cache value) with the same inputs: cached.
	if _, err := (&Cache{Dir: dir, Go: goCmd, Src: src}).Programs(ctx, layout.X86_64, set); err != nil {
		t.Fatal(err)
	}
	if n := builds(); n != 1 {
		t.Errorf("a second Cache over the same directory compiled again (%d builds)", n)
	}
	// Another arch, then changed source: compiled again, each once.
	if _, err := c.Programs(ctx, layout.ARM64, set); err != nil {
		t.Fatal(err)
	}
	// 32-bit arm is built with GOARM=7, whatever the user's GOARM, and
	// cached under a name that says so.
	t.Setenv("GOARM", "5")
	armDir, err := c.Programs(ctx, layout.ARM, set)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(armDir, "init")); !strings.HasPrefix(string(data), "arm GOARM=7 ") {
		t.Errorf("arm program built with %q, want GOARCH=arm GOARM=7", data)
	}
	if !strings.Contains(armDir, "GOARM7") {
		t.Errorf("arm programs cached in %s: the cache key does not name GOARM", armDir)
	}
	src["cmd/init/main.go"] = &fstest.MapFile{Data: []byte("package main // changed\n")}
	changed, err := c.Programs(ctx, layout.X86_64, set)
	if err != nil {
		t.Fatal(err)
	}
	if changed == dirs[0] {
		t.Errorf("changed source reused %s", changed)
	}
	if n := builds(); n != 4 {
		t.Errorf("go build ran %d times, want 4 (x86_64, arm64, arm, changed source)", n)
	}
	// A half-deleted entry (a program missing) is rebuilt, not used.
	os.Remove(filepath.Join(changed, "rush"))
	if _, err := c.Programs(ctx, layout.X86_64, set); err != nil {
		t.Fatal(err)
	}
	if n := builds(); n != 5 {
		t.Errorf("an entry missing a program was used (%d builds, want 5)", n)
	}
	sort.Strings(logs)
	if !strings.Contains(strings.Join(logs, "\n"), "from the cache") {
		t.Errorf("no cache hit was logged:\n%s", strings.Join(logs, "\n"))
	}
}

// The go command's environment pins the arch and its instruction-set
// level over whatever the user set, and the cache key names both, so a
// build for one GOARM is never reused for another.
func TestGoEnv(t *testing.T) {
	t.Setenv("GOARM", "5")
	t.Setenv("GOAMD64", "v3")
	t.Setenv("GOARM64", "v9.0")
	t.Setenv("GOARCH", "riscv64")
	last := func(env []string, key string) string {
		v := ""
		for _, e := range env {
			if k, val, ok := strings.Cut(e, "="); ok && k == key {
				v = val
			}
		}
		return v
	}
	cases := []struct {
		arch                     layout.Arch
		goarch, varKey, varValue string
		key                      string
	}{
		{layout.X86_64, "amd64", "GOAMD64", "v1", "x86_64-GOAMD64v1"},
		{layout.ARM64, "arm64", "GOARM64", "v8.0", "arm64-GOARM64v8.0"},
		{layout.ARM, "arm", "GOARM", "7", "arm-GOARM7"},
	}
	keys := map[string]bool{}
	for _, tc := range cases {
		env := goEnv(tc.arch)
		if got := last(env, "GOARCH"); got != tc.goarch {
			t.Errorf("goEnv(%s): GOARCH=%s, want %s", tc.arch, got, tc.goarch)
		}
		if got := last(env, tc.varKey); got != tc.varValue {
			t.Errorf("goEnv(%s): %s=%s, want %s (the user's value must not win)", tc.arch, tc.varKey, got, tc.varValue)
		}
		if got := last(env, "CGO_ENABLED"); got != "0" {
			t.Errorf("goEnv(%s): CGO_ENABLED=%s, want 0", tc.arch, got)
		}
		if got := targetKey(tc.arch); got != tc.key {
			t.Errorf("targetKey(%s) = %q, want %q", tc.arch, got, tc.key)
		}
		keys[targetKey(tc.arch)] = true
	}
	if len(keys) != len(layout.Arches) {
		t.Errorf("targetKey gives %d distinct keys for %d arches", len(keys), len(layout.Arches))
	}
}

func TestCacheNoGo(t *testing.T) {
	c := &Cache{Dir: t.TempDir(), Go: "ovroot-test-no-such-go"}
	_, err := c.Programs(context.Background(), layout.X86_64, Device)
	if err == nil || !strings.Contains(err.Error(), "not found on PATH") || !strings.Contains(err.Error(), "Go toolchain") {
		t.Errorf("Programs without go: %v, want an error saying the Go toolchain is needed", err)
	}
}

// The real thing: the embedded source compiles into static programs for
// each arch.
func TestCacheBuildsEmbeddedSource(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the device programs: skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not on PATH")
	}
	c := &Cache{Dir: t.TempDir(), Log: t.Logf}
	t.Setenv("GOARM", "5") // a user's setting must not reach the device programs
	machines := map[layout.Arch]elf.Machine{layout.X86_64: elf.EM_X86_64, layout.ARM64: elf.EM_AARCH64, layout.ARM: elf.EM_ARM}
	for _, arch := range layout.Arches {
		dir, err := c.Programs(context.Background(), arch, Device)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range Device.Programs() {
			f, err := elf.Open(filepath.Join(dir, p))
			if err != nil {
				t.Fatalf("%s for %s: %v", p, arch, err)
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("%s for %s is dynamically linked", p, arch)
				}
			}
			if f.Machine != machines[arch] {
				t.Errorf("%s for %s is for %s", p, arch, f.Machine)
			}
			f.Close()
			// The ELF header does not say GOARM; the build info does.
			bi, err := buildinfo.ReadFile(filepath.Join(dir, p))
			if err != nil {
				t.Fatalf("%s for %s: build info: %v", p, arch, err)
			}
			k, v, _ := strings.Cut(arch.GoVariant(), "=")
			got := ""
			for _, s := range bi.Settings {
				if s.Key == k {
					got = s.Value
				}
			}
			if got != v {
				t.Errorf("%s for %s was built with %s=%q, want %q", p, arch, k, got, v)
			}
		}
	}

	// A set's tags reach go build: DeviceNoNet's ovrootctl is built with
	// ovroot_nonet and is megabytes smaller (no net/http, no TLS).
	full, err := c.Programs(context.Background(), layout.X86_64, Device)
	if err != nil {
		t.Fatal(err)
	}
	nonet, err := c.Programs(context.Background(), layout.X86_64, DeviceNoNet)
	if err != nil {
		t.Fatal(err)
	}
	bi, err := buildinfo.ReadFile(filepath.Join(nonet, "ovrootctl"))
	if err != nil {
		t.Fatal(err)
	}
	tags := ""
	for _, s := range bi.Settings {
		if s.Key == "-tags" {
			tags = s.Value
		}
	}
	if tags != "ovroot_nonet" {
		t.Errorf("DeviceNoNet's ovrootctl was built with -tags %q, want ovroot_nonet", tags)
	}
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if a, b := size(filepath.Join(full, "ovrootctl")), size(filepath.Join(nonet, "ovrootctl")); a-b < 1<<20 {
		t.Errorf("ovrootctl is %d bytes with the network code and %d without: want at least 1 MiB less", a, b)
	}
}

// Two processes that built the same entry at once: the second rename
// finds the first's entry, keeps it, and is not an error.
func TestPublishLosesRaceQuietly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "entry")
	first, second := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(first, "init"), []byte("first"), 0o755)
	os.WriteFile(filepath.Join(second, "init"), []byte("second"), 0o755)
	if err := publish(first, dir); err != nil {
		t.Fatal(err)
	}
	if err := publish(second, dir); err != nil {
		t.Fatalf("publish over an existing entry: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "init")); string(data) != "first" {
		t.Errorf("entry holds %q, want the first build's", data)
	}
	if err := publish(filepath.Join(t.TempDir(), "missing"), filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("publish of a missing directory: no error")
	}
}
