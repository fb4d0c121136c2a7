package integration

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ovboot "github.com/ovroot/ovroot/boot"
	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/logwrites"
	"github.com/ovroot/ovroot/internal/testenv"
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
	entries, flushes int // of the recorded write log
	states           int // crash states rebuilt and checked on the host
	booted, bootsOK  int // crash states booted, and how many came up persistent
	verified         int // fsync'd files the host read back, summed over states
	nothing          int // states before any fsync'd file: nothing to verify
	lost, garbage    int
	fsErrors         int
	other            int // scenario-specific failures (not blank-or-clean, reset lost)
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
	const f = "%-8s %-26s %6s %7s %12s %6s %14s %5s %5s %7s %9s %5s\n"
	const d = "%-8s %-26s %6d %7d %12d %6s %14d %5d %5d %7d %9d %5d\n"
	fmt.Fprintf(&b, f, "arch", "scenario", "log", "flushes", "crash states", "booted", "fsync'd files", "empty", "lost", "garbage", "fs errors", "other")
	var total campaignRow
	for _, a := range testArches {
		for _, s := range scenarios {
			r := c.rows[string(a)+" "+s]
			if r == nil {
				continue
			}
			fmt.Fprintf(&b, d, a, s, r.entries, r.flushes, r.states, fmt.Sprintf("%d/%d", r.bootsOK, r.booted), r.verified, r.nothing, r.lost, r.garbage, r.fsErrors, r.other)
			total.entries += r.entries
			total.flushes += r.flushes
			total.states += r.states
			total.booted += r.booted
			total.bootsOK += r.bootsOK
			total.verified += r.verified
			total.nothing += r.nothing
			total.lost += r.lost
			total.garbage += r.garbage
			total.fsErrors += r.fsErrors
			total.other += r.other
		}
	}
	fmt.Fprintf(&b, d, "total", "", total.entries, total.flushes, total.states, fmt.Sprintf("%d/%d", total.bootsOK, total.booted), total.verified, total.nothing, total.lost, total.garbage, total.fsErrors, total.other)
	b.WriteString("log: entries of the recorded write log; crash states: disks rebuilt from it as a power cut leaves them\n" +
		"(every write before a completed flush, then none, all or a random subset of the writes after it), each\n" +
		"checked on the host; booted: how many of them were booted and came up persistent; fsync'd files: files\n" +
		"whose fsync had returned, read back by the host (debugfs) and compared byte for byte, summed over states;\n" +
		"empty: (a) states before any fsync returned, which verify nothing; other: not blank-or-clean after a\n" +
		"format cut, or a reset neither pending nor complete.\n")
	return b.String()
}

// campaignParams are the campaign's knobs, from the environment.
type campaignParams struct {
	seed       int64
	boundaries int // flush boundaries sampled per scenario; 0 = every one
	subsets    int // random subsets of the pending writes per boundary
	boots      int // crash states booted per scenario
	only       string
}

// runs tells whether scenario scen is in OVROOT_CAMPAIGN_SCENARIOS.
func (p campaignParams) runs(scen string) bool {
	return strings.Contains(p.only, strings.Fields(scen)[0][1:2])
}

func campaignParamsFromEnv(t *testing.T) campaignParams {
	t.Helper()
	p := campaignParams{
		seed:       testenv.Int(t, "OVROOT_CAMPAIGN_SEED", time.Now().UnixNano(), 0),
		boundaries: 5,
		subsets:    int(testenv.Int(t, "OVROOT_CAMPAIGN_SUBSETS", 1, 0)),
		boots:      int(testenv.Int(t, "OVROOT_CAMPAIGN_BOOTS", 1, 0)),
		only:       "abcd",
	}
	if s := os.Getenv("OVROOT_CAMPAIGN_SCENARIOS"); s != "" {
		if strings.Trim(s, "abcd") != "" {
			t.Fatalf("OVROOT_CAMPAIGN_SCENARIOS=%q: want letters of abcd", s)
		}
		p.only = s
	}
	switch s := os.Getenv("OVROOT_CAMPAIGN_BOUNDARIES"); s {
	case "":
	case "all":
		p.boundaries = 0
	default:
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("OVROOT_CAMPAIGN_BOUNDARIES=%q: want a positive count or \"all\"", s)
		}
		p.boundaries = n
	}
	return p
}

// TestPowerCutCampaign records every write the guest makes to its disk
// (QEMU's blklogwrites driver, disk write cache on) while it writes files
// with and without fsync, formats its blank data partition on first boot,
// and performs a factory reset. From each recording it rebuilds the disk
// as a power cut at a flush boundary leaves it (every write up to that
// completed flush, then none, all, and random subsets of the writes after
// it, which a disk cache may or may not have written), and checks each
// crash state on the host: e2fsck after journal replay; every file whose
// fsync had returned read back with debugfs and compared with the pattern;
// no file holding anything but a prefix of its pattern; a format either
// not begun (blank) or complete (clean ext4); a reset either still pending
// or complete. Some crash states are booted: the device must come up
// persistent, without a repair, and factory-fresh after a reset.
//
// OVROOT_CAMPAIGN_BOUNDARIES: flush boundaries per scenario and arch (a
// count, default 5, or "all"); OVROOT_CAMPAIGN_SUBSETS: random subsets per
// boundary (default 1); OVROOT_CAMPAIGN_BOOTS: crash states booted per
// scenario and arch (default 1); OVROOT_CAMPAIGN_SEED replays a run;
// OVROOT_CAMPAIGN_SUMMARY names a file for the summary table.
func TestPowerCutCampaign(t *testing.T) {
	requireTools(t)
	t.Parallel()
	p := campaignParamsFromEnv(t)
	t.Logf("power-cut campaign: seed %d (replay: OVROOT_CAMPAIGN_SEED=%d), %+v", p.seed, p.seed, p)
	c := &campaign{rows: map[string]*campaignRow{}}
	t.Run("arches", func(t *testing.T) {
		for _, arch := range testArches {
			t.Run(string(arch), func(t *testing.T) {
				t.Parallel()
				cr := &campaignRun{t: t, arch: arch, p: p, c: c, rng: rand.New(rand.NewSource(p.seed))}
				cr.run()
			})
		}
	})
	table := c.table()
	t.Logf("power-cut campaign summary (seed %d):\n%s", p.seed, table)
	if path := os.Getenv("OVROOT_CAMPAIGN_SUMMARY"); path != "" {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(fmt.Sprintf("power-cut campaign, seed %d\n%s", p.seed, table)), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// campaignRun is the campaign on one arch.
type campaignRun struct {
	t    *testing.T
	arch layout.Arch
	p    campaignParams
	c    *campaign
	rng  *rand.Rand
	img  image
	dir  string
}

// recording is one guest run with every disk write logged.
type recording struct {
	scen    string
	start   string // copy of the whole disk when the recording began
	log     *logwrites.Log
	console string // everything the host saw on the console before the run ended

	partStart, partSize int64 // the data partition on the disk

	once     sync.Once
	commit   int // scenFormat: see formatCommit
	commitOK bool
}

func (cr *campaignRun) run() {
	t := cr.t
	cr.dir = t.TempDir()
	cr.img = buildImage(t, cr.arch, makeSmallRootfs(t, cr.arch), func(im *config.Image) { im.Init.Reset.Keep = []string{keptDir} })

	// (c) The first boot formats the blank data partition.
	rec := cr.record(scenFormat, func(vm *qemu.VM, _ string, cut func()) {
		cr.must(vm.Expect(bootTimeout, "is blank: formatting it ext4"))
		cr.must(vm.Expect(bootTimeout, "GUEST: ready"))
		powerOff(t, vm)
	})
	if cr.p.runs(scenFormat) {
		cr.check(rec, cr.checkFormat(rec))
	}
	formatted := cr.copyDisk("formatted")

	if cr.p.runs(scenFsync) {
		cr.fsyncScenario()
	}
	if cr.p.runs(scenNoFsync) {
		cr.restoreDisk(formatted)
		cr.noFsyncScenario()
	}
	if cr.p.runs(scenReset) {
		cr.restoreDisk(formatted)
		cr.resetScenario()
	}
}

// fsyncScenario: files written and fsync'd one after another, until the
// power goes while the guest is still writing.
func (cr *campaignRun) fsyncScenario() {
	rec := cr.record(scenFsync, func(vm *qemu.VM, _ string, cut func()) {
		cr.must(vm.Expect(bootTimeout, "GUEST: ready"))
		cr.send(vm, "writer /var/pc/a sync")
		cr.must(vm.Expect(commandTimeout, "GUEST-OUT"))
		cr.must(vm.Expect(commandTimeout, "DURABLE 40\n"))
		cut()
	})
	cr.check(rec, cr.checkWriter(rec, "var/pc/a", true))
	if r := cr.c.row(cr.arch, scenFsync); r.verified == 0 {
		cr.t.Errorf("%s %s: no crash state had an fsync'd file to verify (%d states)", cr.arch, scenFsync, r.states)
	}
}

// noFsyncScenario: files written without fsync; nothing is promised but
// that no file holds anything else than what was written to it.
func (cr *campaignRun) noFsyncScenario() {
	t := cr.t
	rec := cr.record(scenNoFsync, func(vm *qemu.VM, logPath string, cut func()) {
		cr.must(vm.Expect(bootTimeout, "GUEST: ready"))
		cr.send(vm, "writer /var/pc/b nosync")
		cr.must(vm.Expect(commandTimeout, "GUEST-OUT"))
		// Nothing reaches the disk until writeback starts (dirty pages past
		// the background limit, or 30 s old) and the journal commits: cut
		// once it has written a good deal, or after a minute. The kernel's
		// lazy inode-table init (the init's mkfs leaves the tables to it)
		// writes up to ~16 MB of zeroes in the first minutes after a
		// format, which does not commit the journal: counted on top.
		grew := waitLogGrowth(logPath, 48<<20, time.Minute)
		if strings.Contains(vm.Console(), "GUEST-DONE rc=1") {
			t.Errorf("%s: the writer stopped before the cut:\n%s", cr.arch, vm.Tail(5))
		}
		cut()
		t.Logf("%s %s: cut after the log grew by %d MB", cr.arch, scenNoFsync, grew>>20)
	})
	cr.check(rec, cr.checkWriter(rec, "var/pc/b", false))
}

// waitLogGrowth waits until the file at path has grown by n bytes, or
// for at most limit; it returns the growth.
func waitLogGrowth(path string, n int64, limit time.Duration) int64 {
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			return 0
		}
		return st.Size()
	}
	start := size()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline) && size()-start < n; {
		time.Sleep(200 * time.Millisecond)
	}
	return size() - start
}

// resetScenario: a factory reset of a used device, requested on the boot
// before.
func (cr *campaignRun) resetScenario() {
	t := cr.t
	vm := boot(t, cr.img)
	expect(t, vm, "GUEST: ready")
	dirty(t, vm, "d")
	guest(t, vm, "exec /usr/bin/ovrootctl factory-reset")
	powerOff(t, vm)
	rec := cr.record(scenReset, func(vm *qemu.VM, _ string, cut func()) {
		cr.must(vm.Expect(bootTimeout, "ovroot: factory reset (trigger=ovrootctl, kept 1 paths) in"))
		cr.must(vm.Expect(bootTimeout, "GUEST: ready"))
		powerOff(t, vm)
	})
	cr.check(rec, cr.checkReset(rec))
}

// must turns a console error into a test failure.
func (cr *campaignRun) must(_ string, err error) {
	cr.t.Helper()
	if err != nil {
		cr.t.Fatalf("%s: %v", cr.arch, err)
	}
}

func (cr *campaignRun) send(vm *qemu.VM, line string) {
	cr.t.Helper()
	if err := vm.Send(line); err != nil {
		cr.t.Fatalf("%s: send %q: %v", cr.arch, line, err)
	}
}

// copyDisk keeps a copy of the test disk as it is now.
func (cr *campaignRun) copyDisk(name string) string {
	cr.t.Helper()
	p := filepath.Join(cr.dir, name+".img")
	if err := copySparse(p, cr.img.path, 0, -1); err != nil {
		cr.t.Fatal(err)
	}
	return p
}

func (cr *campaignRun) restoreDisk(from string) {
	cr.t.Helper()
	if err := copySparse(cr.img.path, from, 0, -1); err != nil {
		cr.t.Fatal(err)
	}
}

// record boots the test disk with its writes logged, lets drive run the
// guest until QEMU has exited (power-off or kill), and reads the log. The
// disk itself receives every write too, so replaying the whole log onto
// the starting copy must give the disk byte for byte: a check of the
// reader against QEMU's own writer.
//
// drive cuts the power with cut (a kill). QEMU writes the disk first and
// the log next, so a kill can leave on the disk a request that is not in
// the log, one the guest never saw complete: the byte-for-byte check of
// the replay is made for runs that end in a power-off. (QMP "stop" would
// drain those requests, but it also flushes the disk, which the log would
// record as the guest's flush.)
func (cr *campaignRun) record(scen string, drive func(vm *qemu.VM, logPath string, cut func())) *recording {
	t := cr.t
	name := strings.Fields(scen)[0][1:2]
	rec := &recording{scen: scen, start: cr.copyDisk("start-" + name)}
	rec.partStart, rec.partSize = partRange(t, cr.img, layout.DataLabel)
	logPath := filepath.Join(cr.dir, "writes-"+name+".log")
	vm := boot(t, cr.img, withWriteLog(logPath))
	killed := false
	drive(vm, logPath, func() { killed = true; vm.Kill() })
	vm.Kill()
	rec.console = vm.Console()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if rec.log, err = logwrites.Read(f, st.Size()); err != nil {
		t.Fatalf("%s %s: %v", cr.arch, scen, err)
	}
	r := cr.c.row(cr.arch, scen)
	r.entries = len(rec.log.Entries)
	r.flushes = len(rec.log.Boundaries()) - 1
	t.Logf("%s %s: recorded %d writes and flushes (%d flushes, %d declared), %d MB of log", cr.arch, scen, r.entries, r.flushes, rec.log.Declared, st.Size()>>20)
	if r.flushes < 3 {
		t.Fatalf("%s %s: the guest flushed its disk %d times: is its write cache off? (QEMU: write-cache=on)", cr.arch, scen, r.flushes)
	}
	replayed := filepath.Join(cr.dir, "replayed.img")
	if err := copySparse(replayed, rec.start, 0, -1); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(replayed)
	w, err := os.OpenFile(replayed, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = rec.log.Replay(w, 0, len(rec.log.Entries))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	diff := diffBlocks(t, replayed, cr.img.path)
	switch {
	case killed:
		t.Logf("%s %s: the disk differs from the replayed log in %d blocks of 4 KiB (requests in flight at the kill)", cr.arch, scen, diff)
	case diff > 0:
		t.Fatalf("%s %s: the disk rebuilt from the write log differs from the disk QEMU wrote in %d blocks of 4 KiB", cr.arch, scen, diff)
	}
	return rec
}

// withWriteLog attaches the image through QEMU's blklogwrites driver, which
// appends every completed write and flush to logPath (dm-log-writes
// format), and turns the disk's write cache on so the guest flushes as it
// must on an eMMC or SD card.
func withWriteLog(logPath string) bootOpt {
	return func(c *qemu.Config) {
		if len(c.Disks) != 1 {
			panic("withWriteLog: want exactly one disk")
		}
		esc := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
		if f, err := os.Create(logPath); err == nil { // QEMU opens it, never creates it
			f.Close()
		}
		c.Extra = append(c.Extra,
			"-blockdev", "driver=file,node-name=disk0,filename="+esc(c.Disks[0]),
			"-blockdev", "driver=file,node-name=log0,filename="+esc(logPath),
			"-blockdev", "driver=blklogwrites,node-name=rec0,file=disk0,log=log0,log-sector-size=512",
			"-device", "virtio-blk-pci,drive=rec0,write-cache=on")
		c.Disks = nil
	}
}

// stateCheck checks one crash state of the data partition (a file the
// host may change) and adds to the row; what names the state for errors.
type stateCheck func(r *campaignRow, part string, cut logwrites.Cut, what string)

// check rebuilds the sampled crash states of rec's data partition, checks
// each with fn, and boots some of them.
func (cr *campaignRun) check(rec *recording, fn stateCheck) {
	t := cr.t
	r := cr.c.row(cr.arch, rec.scen)
	start, size := partRange(t, cr.img, layout.DataLabel)
	bounds := cr.sample(rec)
	prefix := filepath.Join(cr.dir, "prefix.img")
	if err := copySparse(prefix, rec.start, start, size); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(prefix)
	pf, err := os.OpenFile(prefix, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	sec := &logwrites.Section{W: pf, Start: start, Size: size}
	var all []logwrites.Cut
	at := 0
	for _, b := range bounds {
		if err := rec.log.Replay(sec, at, b); err != nil {
			t.Fatal(err)
		}
		at = b
		for _, cut := range rec.log.Cuts(b, cr.p.subsets, cr.rng) {
			state := filepath.Join(cr.dir, "state.img")
			if err := copySparse(state, prefix, 0, -1); err != nil {
				t.Fatal(err)
			}
			sf, err := os.OpenFile(state, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = rec.log.ApplyTail(&logwrites.Section{W: sf, Start: start, Size: size}, cut)
			sf.Close()
			if err != nil {
				t.Fatal(err)
			}
			r.states++
			what := fmt.Sprintf("%s %s, crash state %s", cr.arch, rec.scen, cut)
			t.Logf("checking %s", what)
			fn(r, state, cut, what)
			os.Remove(state)
			all = append(all, cut)
		}
	}
	if sec.Outside > 0 {
		t.Logf("%s %s: %d writes outside the data partition (replayed for the boots)", cr.arch, rec.scen, sec.Outside)
	}
	// Boot some crash states: prefer those with a subset of pending writes,
	// the states only a real power cut makes.
	sort.SliceStable(all, func(i, j int) bool { return all[i].Kind == "subset" && all[j].Kind != "subset" })
	n := min(cr.p.boots, len(all))
	picks := cr.rng.Perm(min(len(all), max(n, 4)))[:n]
	for _, i := range picks {
		cr.bootState(rec, all[i], r)
	}
	t.Logf("%s %s: %d crash states at %d of %d flush boundaries checked on the host, %d booted", cr.arch, rec.scen, len(all), len(bounds), len(rec.log.Boundaries()), n)
}

// sample picks the flush boundaries to check: all of them, or the first,
// the last, the interesting ones, and random others, cr.p.boundaries
// besides the interesting ones.
func (cr *campaignRun) sample(rec *recording) []int {
	all := rec.log.Boundaries()
	if cr.p.boundaries == 0 || cr.p.boundaries >= len(all) {
		return all
	}
	pick := map[int]bool{all[0]: true, all[len(all)-1]: true}
	extra := interesting(rec)
	for _, b := range extra {
		pick[b] = true
	}
	for len(pick) < cr.p.boundaries+len(extra) && len(pick) < len(all) {
		pick[all[cr.rng.Intn(len(all))]] = true
	}
	var out []int
	for b := range pick {
		out = append(out, b)
	}
	sort.Ints(out)
	return out
}

// interesting are flush boundaries a reduced run must not miss: for the
// format, the two around the write that makes the partition an ext4 (the
// commit of the format); for fsync'd writes, the first boundary that makes
// a file durable.
func interesting(rec *recording) []int {
	switch rec.scen {
	case scenFormat:
		if b, ok := rec.formatCommit(); ok {
			return []int{prevBoundary(rec.log, b), b}
		}
	case scenFsync:
		d := durableAt(rec)
		if len(d) > 0 {
			return []int{d[0]}
		}
	}
	return nil
}

func prevBoundary(l *logwrites.Log, b int) int {
	prev := 0
	for _, x := range l.Boundaries() {
		if x < b {
			prev = x
		}
	}
	return prev
}

// formatCommit is the first flush boundary after which the data partition
// probes as ext4 rather than blank.
func (rec *recording) formatCommit() (int, bool) {
	rec.once.Do(func() { rec.commit, rec.commitOK = findFormatCommit(rec) })
	return rec.commit, rec.commitOK
}

func findFormatCommit(rec *recording) (int, bool) {
	// The partition's bytes as the log changes them, over the starting
	// copy, probed after every flush.
	f, err := os.Open(rec.start)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	start, size := rec.partStart, rec.partSize
	dev := &overlayDev{base: io.NewSectionReader(f, start, size), sectors: map[int64][]byte{}}
	sec := &logwrites.Section{W: dev, Start: start, Size: size}
	at := 0
	for _, b := range rec.log.Boundaries() {
		if rec.log.Replay(sec, at, b) != nil {
			return 0, false
		}
		at = b
		if c, err := ovboot.Probe(dev, size); err == nil && c != ovboot.ContentBlank {
			return b, true
		}
	}
	return 0, false
}

// overlayDev is a partition in memory: the bytes written so far, in 512
// byte sectors, over a base that is never written.
type overlayDev struct {
	base    io.ReaderAt
	sectors map[int64][]byte
}

func (d *overlayDev) WriteAt(p []byte, off int64) (int, error) {
	if off%512 != 0 || len(p)%512 != 0 {
		return 0, fmt.Errorf("overlayDev: unaligned write %d+%d", off, len(p))
	}
	for i := 0; i < len(p); i += 512 {
		d.sectors[(off+int64(i))/512] = append([]byte(nil), p[i:i+512]...)
	}
	return len(p), nil
}

func (d *overlayDev) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.base.ReadAt(p, off)
	for i := int64(0); i < int64(len(p)); {
		s := (off + i) / 512
		in := (off + i) % 512
		m := min(512-in, int64(len(p))-i)
		if data, ok := d.sectors[s]; ok {
			copy(p[i:i+m], data[in:in+m])
		}
		i += m
	}
	return n, err
}

// durableAt tells, for each file i of the fsync'd writer, the first flush
// boundary from which it must be whole: the last flush before the guest
// began writing file i+1 (it does that only after fsync of file i and of
// its directory returned), found by the file's content in the log. A file
// whose successor never reached the log must be whole at the last
// boundary if the host saw its "DURABLE i" on the console before the cut.
func durableAt(rec *recording) []int {
	first := map[int]int{} // file index -> first log entry holding its pattern
	for i, e := range rec.log.Entries {
		if !e.IsWrite() || e.Flags&logwrites.FlagDiscard != 0 {
			continue
		}
		data, err := rec.log.Data(i)
		if err != nil {
			return nil
		}
		for _, m := range patternRE.FindAllSubmatch(data, -1) {
			k, _ := strconv.Atoi(string(m[1]))
			if _, ok := first[k]; !ok {
				first[k] = i
			}
		}
	}
	bounds := rec.log.Boundaries()
	before := func(entry int) int {
		b := 0
		for _, x := range bounds {
			if x <= entry {
				b = x
			}
		}
		return b
	}
	var at []int
	console := consoleDurable(rec.console)
	for i := 0; ; i++ {
		if next, ok := first[i+1]; ok {
			at = append(at, before(next))
		} else if i < len(console) {
			at = append(at, bounds[len(bounds)-1])
		} else {
			return at
		}
	}
}

var (
	patternRE = regexp.MustCompile(`file (\d{6}) of the power-cut writer\n`)
	durableRE = regexp.MustCompile(`(?m)^DURABLE (\d+)$`)
)

// consoleDurable lists the indexes whose fsync returned, as the console
// said before the cut.
func consoleDurable(console string) []int {
	var out []int
	for _, m := range durableRE.FindAllStringSubmatch(console, -1) {
		i, _ := strconv.Atoi(m[1])
		out = append(out, i)
	}
	return out
}

// writerPattern is what the guest agent's writer puts in file i
// (integration/guest: pattern).
func writerPattern(i int) []byte {
	line := fmt.Sprintf("file %06d of the power-cut writer\n", i)
	return bytes.Repeat([]byte(line), 16384/len(line))
}

// checkWriter checks the writer's files in dir (relative to the upper) on
// the host: with fsync, every file durable at the state's boundary whole;
// in every case no file holding anything but a prefix of its pattern.
func (cr *campaignRun) checkWriter(rec *recording, dir string, fsynced bool) stateCheck {
	t := cr.t
	var at []int
	if fsynced {
		console := consoleDurable(rec.console)
		for i, k := range console {
			if k != i {
				t.Fatalf("%s %s: the console's fsync'd indexes are not 0..%d without gaps: %v", cr.arch, rec.scen, len(console)-1, console)
			}
		}
		if len(console) == 0 {
			t.Fatalf("%s %s: no fsync returned before the cut: nothing to check", cr.arch, rec.scen)
		}
		at = durableAt(rec)
		t.Logf("%s %s: %d files fsync'd before the cut (console), %d found durable in the log; first durable at boundary %v", cr.arch, rec.scen, len(console), len(at), at[:min(3, len(at))])
		if len(at) < len(console) {
			t.Fatalf("%s %s: %d fsync'd files on the console, %d in the log", cr.arch, rec.scen, len(console), len(at))
		}
	}
	return func(r *campaignRow, part string, cut logwrites.Cut, what string) {
		if !cr.fsckState(r, part, what) {
			return
		}
		files := cr.dump(part, "/"+layout.UpperName+"/"+dir)
		if fsynced {
			n := 0
			for n < len(at) && at[n] <= cut.Boundary {
				n++
			}
			if n == 0 {
				r.nothing++
			}
			r.verified += n
			var lost []string
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("f%06d", i)
				if data, ok := files[name]; !ok || !bytes.Equal(data, writerPattern(i)) {
					lost = append(lost, fmt.Sprintf("%s (%d bytes, present %v)", name, len(data), ok))
				}
			}
			if len(lost) > 0 {
				r.lost += len(lost)
				t.Errorf("%s: %d of %d fsync'd files lost or damaged: %s", what, len(lost), n, strings.Join(lost, ", "))
			}
		}
		var garbage []string
		for name, data := range files {
			var i int
			if _, err := fmt.Sscanf(name, "f%06d", &i); err != nil || !bytes.HasPrefix(writerPattern(i), data) {
				garbage = append(garbage, name)
			}
		}
		if len(garbage) > 0 {
			r.garbage += len(garbage)
			sort.Strings(garbage)
			t.Errorf("%s: %d files hold what was never written to them: %s", what, len(garbage), strings.Join(garbage, ", "))
		}
	}
}

// checkFormat: a first-boot format cut leaves a blank partition (the next
// boot formats it) until the flush that commits the format, and a clean
// ext4 from then on.
func (cr *campaignRun) checkFormat(rec *recording) stateCheck {
	t := cr.t
	commit, ok := rec.formatCommit()
	if !ok {
		t.Fatalf("%s %s: the data partition never probes as ext4 in the log, yet the console says:\n%s", cr.arch, rec.scen, grepLines(rec.console, "formatted"))
	}
	if !regexp.MustCompile(`formatted \S+ as ext4 in \d+ ms`).MatchString(rec.console) {
		t.Fatalf("%s %s: the recorded boot did not report the format", cr.arch, rec.scen)
	}
	return func(r *campaignRow, part string, cut logwrites.Cut, what string) {
		f, err := os.Open(part)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		content, err := ovboot.Probe(f, st.Size())
		f.Close()
		switch {
		case err != nil:
			r.other++
			t.Errorf("%s: probe: %v", what, err)
		case content == ovboot.ContentBlank && cut.Boundary < commit:
			// The next boot formats it.
		case content == ovboot.ContentBlank:
			r.other++
			t.Errorf("%s: blank again after the format committed (boundary %d)", what, commit)
		case content == ovboot.ContentExt4:
			cr.fsckState(r, part, what)
		default:
			r.other++
			t.Errorf("%s: neither blank nor ext4 but %q: the next boot would not format it", what, content)
		}
	}
}

// checkReset: a cut during a factory reset leaves either the request (the
// next boot finishes the reset) or a finished reset: an upper holding the
// kept path and nothing else, and the record of the reset.
func (cr *campaignRun) checkReset(rec *recording) stateCheck {
	t := cr.t
	return func(r *campaignRow, part string, cut logwrites.Cut, what string) {
		if !cr.fsckState(r, part, what) {
			return
		}
		meta := cr.dump(part, "/.ovroot")
		if _, pending := meta["reset-request"]; pending {
			return
		}
		upper := cr.dump(part, "/"+layout.UpperName)
		_, last := meta["last-reset"]
		if len(upper) != 1 || string(upper[strings.TrimPrefix(keptFile, "/")]) != "key-d\n" || !last {
			var names []string
			for n := range upper {
				names = append(names, n)
			}
			sort.Strings(names)
			r.other++
			t.Errorf("%s: no reset request, yet the reset is not complete: last-reset %v, upper holds %d files: %s", what, last, len(names), strings.Join(names[:min(10, len(names))], " "))
		}
	}
}

// fsckState replays the journal of a crash state, as the next mount would,
// and checks the result read-only.
func (cr *campaignRun) fsckState(r *campaignRow, part, what string) bool {
	exec.Command("e2fsck", "-E", "journal_only", "-y", part).Run()
	out, err := exec.Command("e2fsck", "-fn", part).CombinedOutput()
	if problems := crashFsckProblems(string(out)); err != nil || len(problems) > 0 {
		r.fsErrors++
		cr.t.Errorf("%s: data filesystem inconsistent (%v): %q\n%s", what, err, problems, out)
		return false
	}
	return true
}

// dump copies the regular files under dir of the ext4 image part to the
// host with debugfs, and returns them by path relative to dir. A dir that
// does not exist yields nothing.
func (cr *campaignRun) dump(part, dir string) map[string][]byte {
	t := cr.t
	out := filepath.Join(cr.dir, "dump")
	os.RemoveAll(out)
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(out)
	msg, err := exec.Command("debugfs", "-R", fmt.Sprintf("rdump %q %q", dir, out), part).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs rdump %s of %s: %v\n%s", dir, part, err, msg)
	}
	files := map[string][]byte{}
	root := filepath.Join(out, filepath.Base(dir))
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	return files
}

// bootState boots the whole disk as the cut left it: the device must come
// up persistent without a repair; after a reset it must be factory-fresh.
func (cr *campaignRun) bootState(rec *recording, cut logwrites.Cut, r *campaignRow) {
	what := fmt.Sprintf("%s %s, boot of crash state %s", cr.arch, rec.scen, cut)
	disk := filepath.Join(cr.dir, "crash.img")
	if err := copySparse(disk, rec.start, 0, -1); err != nil {
		cr.t.Fatal(err)
	}
	defer os.Remove(disk)
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		cr.t.Fatal(err)
	}
	err = rec.log.ReplayCut(f, cut)
	f.Close()
	if err != nil {
		cr.t.Fatal(err)
	}
	r.booted++
	name := fmt.Sprintf("boot %s %d+%s", strings.Fields(rec.scen)[0], cut.Boundary, cut.Kind)
	ok := cr.t.Run(name, func(t *testing.T) {
		img := image{arch: cr.arch, path: disk}
		vm := boot(t, img)
		if _, err := vm.Expect(bootTimeout, "GUEST: ready"); err != nil {
			t.Fatalf("%s: the device did not come up: %v", what, err)
		}
		if strings.Contains(vm.Console(), "ovroot: repairing") {
			t.Errorf("%s: the boot needed a repair:\n%s", what, grepLines(vm.Console(), "ovroot:"))
		}
		out, err := guestErr(vm, "exec /usr/bin/ovrootctl status")
		if err != nil || !strings.Contains(out, "PERSISTENT") {
			t.Fatalf("%s: not persistent (%v):\n%s", what, err, out)
		}
		if rec.scen == scenReset {
			checkFactoryQuick(t, vm, "d")
		}
		powerOff(t, vm)
		fsck(t, img, layout.DataLabel)
	})
	if ok {
		r.bootsOK++
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// copySparse copies size bytes of src from off (size -1: to its end) into
// a new dst, leaving blocks of zeroes as holes.
func copySparse(dst, src string, off, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if size < 0 {
		st, err := in.Stat()
		if err != nil {
			return err
		}
		size = st.Size() - off
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, 4096)
	for pos := int64(0); pos < size; pos += int64(len(buf)) {
		n := min(int64(len(buf)), size-pos)
		if _, err := in.ReadAt(buf[:n], off+pos); err != nil && err != io.EOF {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		for b := int64(0); b < n; b += 4096 {
			e := min(b+4096, n)
			if !bytes.Equal(buf[b:e], zero[:e-b]) {
				if _, err := out.WriteAt(buf[b:e], pos+b); err != nil {
					return fmt.Errorf("copy to %s: %w", dst, err)
				}
			}
		}
	}
	return out.Close()
}

// diffBlocks counts the 4 KiB blocks in which two files of one size differ.
func diffBlocks(t *testing.T, a, b string) int {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	n := 0
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, _ := io.ReadFull(fb, bb)
		if na != nb {
			t.Fatalf("%s and %s differ in size", a, b)
		}
		for i := 0; i < na; i += 4096 {
			e := min(i+4096, na)
			if !bytes.Equal(ba[i:e], bb[i:e]) {
				n++
			}
		}
		if ea != nil {
			return n
		}
	}
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
