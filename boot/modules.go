package boot

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// loadEntry is one line of the module load list:
//
//	/lib/modules/R/kernel/fs/ext4/ext4.ko deps=jbd2,mbcache,crc16 after=crc32c_generic needs=cpu:type:x86,...
//
// deps= are the modules it needs (depends=): when one of them fails it is
// not tried. after= are modules to load first if they load at all (softdep
// pre:); their failure does not matter. needs= are the module's cpu: aliases:
// when it has some and none matches this CPU, it is not tried (the hardware
// is not there). Names are module names with '_' for '-'; a deps= or after=
// name that is not on the list is ignored.
type loadEntry struct {
	path  string
	name  string
	deps  []string
	after []string
	needs []string
}

// parseLoadList reads the load list; problems are lines it did not
// understand (they are skipped, their module is loaded as if the word were
// not there).
func parseLoadList(data string) (entries []loadEntry, problems []string) {
	for i, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		e := loadEntry{path: f[0], name: moduleName(f[0])}
		for _, w := range f[1:] {
			k, v, _ := strings.Cut(w, "=")
			switch k {
			case "deps":
				e.deps = strings.Split(v, ",")
			case "after":
				e.after = strings.Split(v, ",")
			case "needs":
				e.needs = append(e.needs, v)
			default:
				problems = append(problems, fmt.Sprintf("line %d: unknown word %q", i+1, w))
			}
		}
		entries = append(entries, e)
	}
	return entries, problems
}

// moduleName is the module name of a module file: "crc32c-intel.ko" is
// crc32c_intel.
func moduleName(p string) string {
	base := path.Base(filepath.ToSlash(p))
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(base, ".ko"), "-", "_")
}

// cpuMatches reports whether any of the cpu: aliases matches the CPU's
// modalias (/sys/devices/system/cpu/modalias), with the kernel's fnmatch
// rules (only '*' is used in cpu: aliases).
func cpuMatches(aliases []string, modalias string) bool {
	for _, a := range aliases {
		if globMatch(a, modalias) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern where '*' stands for any string
// ('/' included, unlike path.Match) and '?' for one byte.
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	nextP, nextS := -1, -1
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				nextP, nextS = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if nextS > 0 && nextS <= len(s) {
			px, sx = nextP, nextS
			continue
		}
		return false
	}
	return true
}

// loadOutcome is what happened to one module.
type loadOutcome struct {
	err     error         // from load; nil if loaded
	skipped string        // why it was not tried ("" = tried)
	depFail bool          // skipped because a deps= module failed
	took    time.Duration // time in load
}

// loadGraph loads the entries with up to workers loads at a time. A module
// starts once every deps= and after= module on the list is done (loaded,
// failed or skipped); the list order is a valid order, so workers = 1
// loads in list order. A module whose deps= module failed or was skipped
// for a failure is not tried. absent(err) says that err means the hardware
// is not there (ENODEV): that counts as done, not failed. skip, when it
// returns a reason, leaves a module out without trying it. The outcomes
// are in list order.
func loadGraph(entries []loadEntry, workers int, load func(loadEntry) error, absent func(error) bool, skip func(loadEntry) string, now func() time.Time) []loadOutcome {
	if workers < 1 {
		workers = 1
	}
	index := map[string]int{}
	for i, e := range entries {
		if _, dup := index[e.name]; !dup {
			index[e.name] = i
		}
	}
	// waits[i]: the earlier entries i waits for; a name later on the list
	// (or i itself) is ignored, so the graph has no cycle.
	waits := make([][]int, len(entries))
	hard := make([]map[int]bool, len(entries))
	dependents := make([][]int, len(entries))
	pending := make([]int, len(entries))
	for i, e := range entries {
		hard[i] = map[int]bool{}
		seen := map[int]bool{}
		for _, list := range [][]string{e.deps, e.after} {
			for _, n := range list {
				j, ok := index[n]
				if !ok || j >= i || seen[j] {
					continue
				}
				seen[j] = true
				waits[i] = append(waits[i], j)
				dependents[j] = append(dependents[j], i)
				pending[i]++
			}
		}
		for _, n := range e.deps {
			if j, ok := index[n]; ok && j < i {
				hard[i][j] = true
			}
		}
	}
	out := make([]loadOutcome, len(entries))
	failed := make([]bool, len(entries))
	var mu sync.Mutex
	ready := make(chan int, len(entries))
	done := make(chan int, len(entries))
	for i := range entries {
		if pending[i] == 0 {
			ready <- i
		}
	}
	// run decides for one entry whose waits are all done.
	run := func(i int) {
		e := entries[i]
		mu.Lock()
		var bad []string
		for _, j := range waits[i] {
			if hard[i][j] && failed[j] {
				bad = append(bad, entries[j].name)
			}
		}
		mu.Unlock()
		var o loadOutcome
		switch {
		case len(bad) > 0:
			o.skipped = "needs " + strings.Join(bad, ", ") + ", which did not load"
			o.depFail = true
		default:
			if why := skip(e); why != "" {
				o.skipped = why
				break
			}
			t := now()
			o.err = load(e)
			o.took = now().Sub(t)
		}
		mu.Lock()
		out[i] = o
		failed[i] = o.depFail || (o.err != nil && !absent(o.err))
		mu.Unlock()
		done <- i
	}
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				run(i)
			}
		}()
	}
	// The dispatcher: hand ready entries to the workers in list order of
	// readiness, release dependents as entries finish.
	finished, inFlight := 0, 0
	var queue []int
	for finished < len(entries) {
		for len(ready) > 0 {
			queue = append(queue, <-ready)
		}
		if len(queue) > 0 && inFlight < workers {
			lowest := 0
			for k := range queue {
				if queue[k] < queue[lowest] {
					lowest = k
				}
			}
			i := queue[lowest]
			queue = append(queue[:lowest], queue[lowest+1:]...)
			inFlight++
			work <- i
			continue
		}
		i := <-done
		inFlight--
		finished++
		for _, d := range dependents[i] {
			pending[d]--
			if pending[d] == 0 {
				queue = append(queue, d)
			}
		}
	}
	close(work)
	wg.Wait()
	return out
}
