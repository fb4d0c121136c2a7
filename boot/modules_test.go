package boot

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// The graph of the default x86_64 list, as the host tool writes it.
const x86List = `/m/virtio_ring.ko
/m/virtio_pci_modern_dev.ko
/m/virtio_pci_legacy_dev.ko
/m/virtio.ko deps=virtio_ring
/m/virtio_pci.ko deps=virtio,virtio_pci_legacy_dev,virtio_pci_modern_dev,virtio_ring
/m/virtio_blk.ko deps=virtio,virtio_ring
/m/squashfs.ko
/m/overlay.ko
/m/crc32c_generic.ko
/m/crc32c-intel.ko needs=cpu:type:x86,ven*fam*mod*:feature:*0094*
/m/jbd2.ko after=crc32c_generic,crc32c_intel
/m/mbcache.ko
/m/crc16.ko
/m/ext4.ko deps=crc16,jbd2,mbcache after=crc32c_generic,crc32c_intel
`

var errNoDev = errors.New("no such device")

func TestParseLoadList(t *testing.T) {
	entries, problems := parseLoadList("# comment\n\n/m/a.ko\n/m/b-c.ko deps=a after=x,y needs=cpu:p1 needs=cpu:p2 bogus=1\n")
	want := []loadEntry{
		{path: "/m/a.ko", name: "a"},
		{path: "/m/b-c.ko", name: "b_c", deps: []string{"a"}, after: []string{"x", "y"}, needs: []string{"cpu:p1", "cpu:p2"}},
	}
	if !reflect.DeepEqual(entries, want) {
		t.Errorf("entries %+v, want %+v", entries, want)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], `line 4: unknown word "bogus=1"`) {
		t.Errorf("problems %q", problems)
	}
}

// run loads the list with workers goroutines; errs by module name. It
// checks that every module started only after all it waits for finished,
// and returns the outcomes by name and the modules tried.
func runGraph(t *testing.T, list string, workers int, errs map[string]error, skip func(loadEntry) string) (map[string]loadOutcome, []string) {
	t.Helper()
	entries, problems := parseLoadList(list)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	var mu sync.Mutex
	finished := map[string]bool{}
	var tried []string
	load := func(e loadEntry) error {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range append(append([]string(nil), e.deps...), e.after...) {
			if !finished[w] {
				t.Errorf("%s started before %s finished", e.name, w)
			}
		}
		tried = append(tried, e.name)
		finished[e.name] = true
		return errs[e.name]
	}
	if skip == nil {
		skip = func(loadEntry) string { return "" }
	}
	wrappedSkip := func(e loadEntry) string {
		why := skip(e)
		if why != "" {
			mu.Lock()
			finished[e.name] = true
			mu.Unlock()
		}
		return why
	}
	out := loadGraph(entries, workers, load, func(err error) bool { return errors.Is(err, errNoDev) }, wrappedSkip, time.Now)
	// a failed dependency's dependents never reach load, so mark them.
	byName := map[string]loadOutcome{}
	for i, o := range out {
		byName[entries[i].name] = o
	}
	return byName, tried
}

func TestLoadGraphOrder(t *testing.T) {
	for _, workers := range []int{1, 2, 4, 16} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			for i := 0; i < 50; i++ { // different interleavings
				out, tried := runGraph(t, x86List, workers, nil, nil)
				if len(tried) != 14 {
					t.Fatalf("tried %d modules, want 14: %v", len(tried), tried)
				}
				for n, o := range out {
					if o.err != nil || o.skipped != "" {
						t.Errorf("%s: %+v", n, o)
					}
				}
				if workers == 1 && i == 0 {
					entries, _ := parseLoadList(x86List)
					for k, e := range entries {
						if tried[k] != e.name {
							t.Fatalf("one at a time: loaded %v, want list order", tried)
						}
					}
				}
			}
		})
	}
}

// Independent modules load at the same time: squashfs and overlay each
// wait inside load until the other has started.
func TestLoadGraphConcurrent(t *testing.T) {
	entries, _ := parseLoadList("/m/squashfs.ko\n/m/overlay.ko\n")
	var wg sync.WaitGroup
	wg.Add(2)
	both := make(chan struct{})
	go func() { wg.Wait(); close(both) }()
	load := func(e loadEntry) error {
		wg.Done()
		select {
		case <-both:
			return nil
		case <-time.After(20 * time.Second):
			return fmt.Errorf("%s loaded alone", e.name)
		}
	}
	out := loadGraph(entries, 2, load, func(error) bool { return false }, func(loadEntry) string { return "" }, time.Now)
	for i, o := range out {
		if o.err != nil {
			t.Errorf("%s: %v", entries[i].name, o.err)
		}
	}
}

func TestLoadGraphFailures(t *testing.T) {
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			out, tried := runGraph(t, x86List, workers, map[string]error{
				"jbd2":           errors.New("exec format error"), // ext4 cannot load
				"crc32c_generic": errors.New("exec format error"), // only a softdep: jbd2 and ext4 still tried
				"crc32c_intel":   errNoDev,                        // not there: not a failure
				"virtio_ring":    errNoDev,                        // ENODEV is not a failure for dependents either
			}, nil)
			if o := out["ext4"]; !o.depFail || o.skipped != "needs jbd2, which did not load" {
				t.Errorf("ext4: %+v, want skipped for jbd2", o)
			}
			for _, n := range tried {
				if n == "ext4" {
					t.Error("ext4 was tried though jbd2 failed")
				}
			}
			// Everything else is tried, the failure of jbd2 stops nothing
			// that does not need it.
			if len(tried) != 13 {
				t.Errorf("tried %d modules, want 13: %v", len(tried), tried)
			}
			for _, n := range []string{"squashfs", "overlay", "virtio_blk", "virtio_pci", "mbcache", "crc16"} {
				if o := out[n]; o.err != nil || o.skipped != "" {
					t.Errorf("%s: %+v, want loaded", n, o)
				}
			}
		})
	}
}

// A failure that cascades: the dependents of a module skipped for a failed
// dependency are skipped too, and name their own dependency.
func TestLoadGraphCascade(t *testing.T) {
	out, _ := runGraph(t, "/m/a.ko\n/m/b.ko deps=a\n/m/c.ko deps=b\n/m/d.ko\n", 2, map[string]error{"a": errors.New("bad")}, nil)
	if o := out["c"]; !o.depFail || o.skipped != "needs b, which did not load" {
		t.Errorf("c: %+v", o)
	}
	if o := out["d"]; o.err != nil || o.skipped != "" {
		t.Errorf("d: %+v", o)
	}
}

func TestCPUMatches(t *testing.T) {
	intel := []string{"cpu:type:x86,ven*fam*mod*:feature:*0094*"}
	with := "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0002,0094,00E5,01A7"
	without := "cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0001,0002,0093,0095,00E5"
	if !cpuMatches(intel, with) {
		t.Error("SSE4.2 CPU does not match crc32c-intel's alias")
	}
	if cpuMatches(intel, without) {
		t.Error("CPU without SSE4.2 matches crc32c-intel's alias")
	}
	armCE := []string{"cpu:type:aarch64:feature:*0010*"}
	if !cpuMatches(armCE, "cpu:type:aarch64:feature:,0000,0001,0010,0011") || cpuMatches(armCE, "cpu:type:aarch64:feature:,0000,0001,0011") {
		t.Error("arm64 feature alias matched wrongly")
	}
	for _, c := range []struct {
		p, s string
		want bool
	}{{"a*b", "ab", true}, {"a*b", "axxb", true}, {"a*b", "axxbc", false}, {"*", "", true}, {"a?c", "abc", true}, {"a?c", "ac", false}, {"a/*", "a/b/c", true}} {
		if got := globMatch(c.p, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.p, c.s, got)
		}
	}
}
