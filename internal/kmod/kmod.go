// Package kmod reads kernel module metadata (the .modinfo ELF section of
// each .ko) and resolves the set of modules needed to load a list of names,
// in load order. Debian's kernel packages ship no modules.dep, so the host
// tool computes it from the modules themselves.
//
// It does not load modules (the device's init does, from the order this
// package computes) and does not read compressed modules (Debian's 6.1
// packages ship plain .ko files; a compressed one is an error naming it).
package kmod

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Module is one kernel module.
type Module struct {
	Name     string   // normalized: '-' written as '_'
	Path     string   // relative to the modules dir, slash-separated
	Depends  []string // depends=, normalized
	SoftPre  []string // softdep pre: entries (names or aliases)
	SoftPost []string // softdep post: entries
	Aliases  []string // alias=
	Release  string   // first field of vermagic=, the kernel release
}

// Normalize treats '-' and '_' alike in module names, as the kernel does.
func Normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// ParseModinfo parses the bytes of a .modinfo section: NUL-separated
// key=value strings.
func ParseModinfo(data []byte) (Module, error) {
	var m Module
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			m.Name = Normalize(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					m.Depends = append(m.Depends, Normalize(d))
				}
			}
		case "softdep":
			// "pre: a b post: c" (modprobe.d(5) syntax).
			var cur *[]string
			for _, f := range strings.Fields(v) {
				switch f {
				case "pre:":
					cur = &m.SoftPre
				case "post:":
					cur = &m.SoftPost
				default:
					if cur != nil {
						*cur = append(*cur, f)
					}
				}
			}
		case "alias":
			m.Aliases = append(m.Aliases, v)
		case "vermagic":
			if f := strings.Fields(v); len(f) > 0 {
				m.Release = f[0]
			}
		}
	}
	if m.Name == "" {
		return m, errors.New(".modinfo has no name=")
	}
	return m, nil
}

// ReadModinfo reads the .modinfo section of a module's ELF file.
func ReadModinfo(r io.ReaderAt) (Module, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return Module{}, fmt.Errorf("not an ELF file: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return Module{}, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return Module{}, fmt.Errorf("read .modinfo: %w", err)
	}
	return ParseModinfo(data)
}

// Index is every module of one modules directory.
type Index struct {
	Dir     string
	modules map[string]*Module  // by name
	aliases map[string][]string // alias -> module names
	builtin map[string]bool
}

// NewIndex builds an index from modules already read (used by tests and by
// LoadIndex).
func NewIndex(dir string, mods []Module, builtin []string) *Index {
	ix := &Index{Dir: dir, modules: map[string]*Module{}, aliases: map[string][]string{}, builtin: map[string]bool{}}
	for i := range mods {
		m := &mods[i]
		ix.modules[m.Name] = m
		for _, a := range m.Aliases {
			ix.aliases[a] = append(ix.aliases[a], m.Name)
		}
	}
	for _, a := range ix.aliases {
		sort.Strings(a)
	}
	for _, b := range builtin {
		ix.builtin[Normalize(b)] = true
	}
	return ix
}

// LoadIndex reads every module under dir (a lib/modules/<release> tree) and
// its modules.builtin.
func LoadIndex(dir string) (*Index, error) {
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	mods, builtin, err := ReadModules(dir)
	if err != nil {
		return nil, err
	}
	return NewIndex(dir, mods, builtin), nil
}

// ReadModules reads the .modinfo of every module under dir and the names
// in its modules.builtin: what NewIndex takes, so a caller can keep them
// (the host tool caches them: reading 4000 modules takes a quarter of a
// second).
func ReadModules(dir string) ([]Module, []string, error) {
	// A symlink named as the modules directory is followed (WalkDir
	// would take the link for a file and find no modules).
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	var mods []Module
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() || !strings.Contains(name, ".ko") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if !strings.HasSuffix(name, ".ko") {
			return fmt.Errorf("%s: compressed modules are not supported; unpack them (e.g. xz -d) first", rel)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		m, err := ReadModinfo(f)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		m.Path = filepath.ToSlash(rel)
		mods = append(mods, m)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read modules in %s: %w", dir, err)
	}
	if len(mods) == 0 {
		return nil, nil, fmt.Errorf("no kernel modules (*.ko) under %s", dir)
	}
	var builtin []string
	if data, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			base := filepath.Base(strings.TrimSpace(sc.Text()))
			if base != "." && base != "" {
				builtin = append(builtin, strings.TrimSuffix(base, ".ko"))
			}
		}
	}
	return mods, builtin, nil
}

// Lookup finds a module by name.
func (ix *Index) Lookup(name string) (*Module, bool) {
	m, ok := ix.modules[Normalize(name)]
	return m, ok
}

// Builtin reports whether the kernel has the module built in.
func (ix *Index) Builtin(name string) bool { return ix.builtin[Normalize(name)] }

// Release is the kernel release the modules were built for (vermagic), or
// the directory's name when the modules do not say.
func (ix *Index) Release() string {
	names := make([]string, 0, len(ix.modules))
	for n := range ix.modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if r := ix.modules[n].Release; r != "" {
			return r
		}
	}
	return filepath.Base(ix.Dir)
}

// resolve maps a name or alias to module names; builtin reports a name the
// kernel has built in.
func (ix *Index) resolve(name string) (mods []string, builtin bool) {
	if _, ok := ix.modules[Normalize(name)]; ok {
		return []string{Normalize(name)}, false
	}
	if ix.builtin[Normalize(name)] {
		return nil, true
	}
	return ix.aliases[name], false
}

// Closure returns the modules needed to load names (module names or
// aliases), dependencies first: every module comes after its depends= and
// softdep pre: entries, and softdep post: entries come after it. An alias
// brings in every module that provides it. Built-in modules are left out.
// Softdeps that resolve to nothing are skipped: they are optional.
func (ix *Index) Closure(names ...string) ([]*Module, error) {
	var order []*Module
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(name string, stack []string) error
	visit = func(name string, stack []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("dependency cycle: %s -> %s", strings.Join(stack, " -> "), name)
		}
		m := ix.modules[name]
		state[name] = 1
		stack = append(stack, name)
		for _, d := range m.Depends {
			targets, builtin := ix.resolve(d)
			if builtin {
				continue
			}
			if len(targets) == 0 {
				return fmt.Errorf("%s depends on %s, which is not in %s", name, d, ix.Dir)
			}
			for _, t := range targets {
				if err := visit(t, stack); err != nil {
					return err
				}
			}
		}
		for _, d := range m.SoftPre {
			targets, _ := ix.resolve(d)
			for _, t := range targets {
				if state[t] == 1 {
					continue // a soft dependency never makes a cycle fatal
				}
				if err := visit(t, stack); err != nil {
					return err
				}
			}
		}
		state[name] = 2
		order = append(order, m)
		for _, d := range m.SoftPost {
			targets, _ := ix.resolve(d)
			for _, t := range targets {
				if state[t] == 0 {
					if err := visit(t, stack[:len(stack)-1]); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for _, n := range names {
		targets, builtin := ix.resolve(n)
		if builtin {
			continue
		}
		if len(targets) == 0 {
			return nil, fmt.Errorf("module %s: not a module, alias or built-in of the kernel in %s", n, ix.Dir)
		}
		for _, t := range targets {
			if err := visit(t, nil); err != nil {
				return nil, err
			}
		}
	}
	return order, nil
}

// Waits returns, for each module of order (a Closure), the earlier modules
// of order it must wait for: deps are its depends= (it cannot load without
// them), after are its softdep pre: entries and the modules that name it in
// softdep post: (loaded first when they load at all). Names are normalized
// and sorted; a module later in order is never named, so the waits form no
// cycle and order itself respects them.
func (ix *Index) Waits(order []*Module) (deps, after map[string][]string) {
	pos := map[string]int{}
	for i, m := range order {
		pos[m.Name] = i
	}
	deps, after = map[string][]string{}, map[string][]string{}
	add := func(to map[string][]string, m string, i int, names []string) {
		for _, n := range names {
			targets, _ := ix.resolve(n)
			for _, t := range targets {
				if j, ok := pos[t]; ok && j < i && !contains(to[m], t) {
					to[m] = append(to[m], t)
				}
			}
		}
	}
	for i, m := range order {
		add(deps, m.Name, i, m.Depends)
		add(after, m.Name, i, m.SoftPre)
		for _, n := range m.SoftPost {
			targets, _ := ix.resolve(n)
			for _, t := range targets {
				if j, ok := pos[t]; ok && j > i && !contains(after[t], m.Name) {
					after[t] = append(after[t], m.Name)
				}
			}
		}
	}
	for _, to := range []map[string][]string{deps, after} {
		for k := range to {
			sort.Strings(to[k])
		}
	}
	return deps, after
}

// CPUAliases are the module's cpu: aliases: a module that has some is for
// a CPU feature (crc32c-intel for SSE4.2) and does nothing without it.
func (m *Module) CPUAliases() []string {
	var out []string
	for _, a := range m.Aliases {
		if strings.HasPrefix(a, "cpu:") {
			out = append(out, a)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
