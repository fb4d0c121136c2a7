package integration

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

// Scenarios of the power-cut campaign: what the guest is doing when the
// power goes.
const (
	scenFsync   = "(a) writes with fsync"
	scenNoFsync = "(b) writes without fsync"
	scenFormat  = "(c) first-boot format"
	scenReset   = "(d) factory reset"
)

var scenarios = []string{scenFsync, scenNoFsync, scenFormat, scenReset}

// campaignRow is one line of the summary table.
type campaignRow struct {
	kills, bootsOK, checked, lost, garbage, fsErrors int
}

type campaign struct {
	mu   sync.Mutex
	rows map[string]*campaignRow // arch + scenario
}

func (c *campaign) row(arch layout.Arch, scen string) *campaignRow {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := string(arch) + " " + scen
	if c.rows[k] == nil {
		c.rows[k] = &campaignRow{}
	}
	return c.rows[k]
}

func (c *campaign) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %-26s %6s %9s %14s %5s %8s %10s\n", "arch", "scenario", "kills", "boots ok", "fsync'd files", "lost", "garbage", "fs errors")
	total := campaignRow{}
	for _, a := range layout.Arches {
		for _, s := range scenarios {
			r := c.rows[string(a)+" "+s]
			if r == nil {
				continue
			}
			fmt.Fprintf(&b, "%-8s %-26s %6d %8d%% %14d %5d %8d %10d\n", a, s, r.kills, pct(r.bootsOK, r.kills), r.checked, r.lost, r.garbage, r.fsErrors)
			total.kills += r.kills
			total.bootsOK += r.bootsOK
			total.checked += r.checked
			total.lost += r.lost
			total.garbage += r.garbage
			total.fsErrors += r.fsErrors
		}
	}
	fmt.Fprintf(&b, "%-8s %-26s %6d %8d%% %14d %5d %8d %10d\n", "total", "", total.kills, pct(total.bootsOK, total.kills), total.checked, total.lost, total.garbage, total.fsErrors)
	return b.String()
}

func pct(a, b int) int {
	if b == 0 {
		return 100
	}
	return a * 100 / b
}

// TestPowerCutCampaign kills QEMU at seeded random moments while the
// guest writes with and without fsync, formats its data partition, or
// performs a factory reset; after every kill it boots again and checks the
// device comes up, no file whose fsync returned is lost or damaged, and
// the data filesystem is consistent (host e2fsck after journal replay).
// OVROOT_CAMPAIGN_KILLS sets kills per scenario and arch (default: 3, 3, 2,
// 2, so 20 in all); OVROOT_CAMPAIGN_SEED replays a run;
// OVROOT_CAMPAIGN_SUMMARY names a file for the summary table.
func TestPowerCutCampaign(t *testing.T) {
	requireTools(t)
	seed := time.Now().UnixNano()
	if s := os.Getenv("OVROOT_CAMPAIGN_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	kills := map[string]int{scenFsync: 3, scenNoFsync: 3, scenFormat: 2, scenReset: 2}
	if s := os.Getenv("OVROOT_CAMPAIGN_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("OVROOT_CAMPAIGN_KILLS=%q", s)
		}
		for k := range kills {
			kills[k] = n
		}
	}
	t.Logf("power-cut campaign: seed %d (replay: OVROOT_CAMPAIGN_SEED=%d)", seed, seed)
	c := &campaign{rows: map[string]*campaignRow{}}
	t.Run("arches", func(t *testing.T) {
		for _, arch := range layout.Arches {
			t.Run(string(arch), func(t *testing.T) {
				t.Parallel()
				runCampaign(t, arch, rand.New(rand.NewSource(seed)), kills, c)
			})
		}
	})
	table := c.table()
	t.Logf("power-cut campaign summary (seed %d):\n%s", seed, table)
	if p := os.Getenv("OVROOT_CAMPAIGN_SUMMARY"); p != "" {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(fmt.Sprintf("power-cut campaign, seed %d\n%s", seed, table)), 0o644)
	}
}

func runCampaign(t *testing.T, arch layout.Arch, rng *rand.Rand, kills map[string]int, c *campaign) {
	img := buildImage(t, arch, makeSmallRootfs(t, arch), func(im *config.Image) { im.Init.Reset.Keep = []string{keptDir} })
	var vm *qemu.VM
	// up boots and waits for the agent; a boot that does not come up is a
	// failure of the whole campaign (the device would be bricked).
	up := func(what string, opts ...bootOpt) bool {
		vm = boot(t, img, opts...)
		if _, err := vm.Expect(bootTimeout, "GUEST: ready"); err != nil {
			t.Errorf("%s: the device did not come up: %v", what, err)
			return false
		}
		return true
	}
	// cut kills QEMU after a random delay in [lo, hi).
	cut := func(lo, hi time.Duration) time.Duration {
		at := lo + time.Duration(rng.Int63n(int64(hi-lo)))
		time.Sleep(at)
		vm.Kill()
		vm.Wait(time.Minute)
		return at
	}
	// fsckAfterCut replays the journal of a copy of the data partition and
	// checks it, as the next mount would find it.
	fsckAfterCut := func(r *campaignRow, what string) {
		p := partition(t, img, layout.DataLabel)
		defer os.Remove(p)
		exec.Command("e2fsck", "-E", "journal_only", "-y", p).Run()
		out, err := exec.Command("e2fsck", "-fn", p).CombinedOutput()
		if problems := crashFsckProblems(string(out)); err != nil || len(problems) > 0 {
			r.fsErrors++
			t.Errorf("%s: data filesystem inconsistent after the cut:\n%s", what, out)
		}
	}

	if !up("first boot") {
		return
	}
	for _, scen := range scenarios {
		r := c.row(arch, scen)
		for i := 1; i <= kills[scen]; i++ {
			what := fmt.Sprintf("%s %s, kill %d", arch, scen, i)
			r.kills++
			var at time.Duration
			durable := 0
			dir := fmt.Sprintf("/var/pc/%s-%d", strings.Fields(scen)[0][1:2], i)
			switch scen {
			case scenFsync, scenNoFsync:
				mode := "sync"
				if scen == scenNoFsync {
					mode = "nosync"
				}
				vm.Send("writer " + dir + " " + mode)
				vm.Expect(commandTimeout, "GUEST-OUT")
				at = cut(500*time.Millisecond, 4*time.Second)
				durable = len(regexp.MustCompile(`DURABLE \d+`).FindAllString(vm.Console(), -1))
				if m := regexp.MustCompile(`GUEST-DONE rc=1 err=(.*)`).FindStringSubmatch(vm.Console()); m != nil {
					t.Errorf("%s: the writer stopped before the cut: %s", what, m[1])
				}
				fsckAfterCut(r, what)
			case scenFormat:
				powerOff(t, vm)
				zeroPartition(t, img, layout.DataLabel)
				vm = boot(t, img)
				expect(t, vm, "is blank: formatting it ext4")
				at = cut(0, 2500*time.Millisecond)
			case scenReset:
				dirty(t, vm, fmt.Sprintf("d%d", i))
				guest(t, vm, "exec /usr/bin/ovrootctl factory-reset")
				powerOff(t, vm)
				vm = boot(t, img, withCmdline("ovroot.reset_step_delay="+stepDelay.String()))
				expect(t, vm, "ovroot: factory reset (trigger=ovrootctl): starting")
				at = cut(0, 11*stepDelay)
				fsckAfterCut(r, what)
			}
			t.Logf("%s at +%d ms (%d fsync'd files)", what, at.Milliseconds(), durable)
			if !up(what) {
				continue
			}
			if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "PERSISTENT") {
				t.Errorf("%s: the next boot is not persistent:\n%s", what, st)
				continue
			}
			r.bootsOK++
			switch scen {
			case scenFsync, scenNoFsync:
				out := guest(t, vm, fmt.Sprintf("verify-writer %s %d", dir, durable))
				m := regexp.MustCompile(`checked (\d+) lost (\d+) garbage (\d+)`).FindStringSubmatch(out)
				if m == nil {
					t.Errorf("%s: verify: %s", what, out)
					continue
				}
				checked, _ := strconv.Atoi(m[1])
				lost, _ := strconv.Atoi(m[2])
				garbage, _ := strconv.Atoi(m[3])
				r.checked += checked
				r.lost += lost
				r.garbage += garbage
				if lost > 0 || garbage > 0 {
					t.Errorf("%s: %s", what, out)
				}
				// Room for the next run: a long campaign would fill the partition.
				guest(t, vm, "rm "+dir)
			case scenReset:
				checkFactoryQuick(t, vm, fmt.Sprintf("d%d", i))
			}
		}
	}
	powerOff(t, vm)
	fsck(t, img, layout.DataLabel)
}

// crashFsckProblems lists what e2fsck -n would fix after a power cut, less
// the superblock's global free block and inode counts: the kernel does not
// keep those up to date on the disk (only the per-group counters, which
// stay checked), recomputes them at mount, and e2fsck -p fixes them
// without calling it an error.
func crashFsckProblems(out string) []string {
	var problems []string
	prev := ""
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasSuffix(l, "? no") {
			what := strings.TrimSpace(strings.TrimSuffix(l, "? no"))
			if !strings.Contains(what, " ") { // "Fix? no" on its own line
				what = prev
			}
			if !regexp.MustCompile(`^Free (blocks|inodes) count wrong \(`).MatchString(what) {
				problems = append(problems, what)
			}
		}
		if l != "" {
			prev = l
		}
	}
	if strings.Contains(out, "skipping journal recovery") {
		problems = append(problems, "journal not replayed")
	}
	return problems
}

// zeroPartition blanks a partition, as a fresh image has it.
func zeroPartition(t *testing.T, img image, label string) {
	t.Helper()
	_, size := partRange(t, img, label)
	chunk := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		n := min(int64(len(chunk)), size-off)
		writePart(t, img, label, off, chunk[:n])
	}
}
