package boot

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
	"golang.org/x/sys/unix"
)

// Boot is one run of the device's boot sequence.
type Boot struct {
	Sys Sys
	// Root prefixes every file the init reads or writes itself (config,
	// module list, state); "" means "/". Tests point it at t.TempDir().
	Root  string
	Logf  Logf // a step
	Warnf Logf // something a person must know about
	// Tracef marks the end of a boot step with ovroot.trace (kernel log
	// only); nil = no marks.
	Tracef Logf
	Now    func() time.Time
	Sleep  func(time.Duration)
	// OnPseudoFS runs once /proc, /sys and /dev are mounted (the logger
	// attaches to /dev/kmsg there).
	OnPseudoFS func()
	// ModuleWorkers is how many modules load at a time along the
	// dependency graph; 0 means 1 (list order). Parallel loads measured
	// slower with -smp 2 under QEMU TCG on a busy 2-core host
	// (docs/performance.md), so nothing sets it yet.
	ModuleWorkers int
	// Reboot restarts the machine (FailTrial); nil = sync and reboot(2).
	Reboot func() error
	// ESPMounter mounts the boot partition when the init gives up a
	// damaged confirmed slot (GiveUpSlot); nil = mount(2).
	ESPMounter slot.Mounter
	// StartConfirmer starts the background confirm_after process
	// (confirm_linux.go); nil = the real one.
	StartConfirmer func(newRoot string, after time.Duration, health config.Init) error
	// StartWatchdog starts the trial watchdog keeper
	// (watchdog_linux.go); nil = the real one.
	StartWatchdog func(newRoot string, after time.Duration, wd *os.File) error

	cfg          config.Init
	cmdline      Cmdline
	state        layout.State
	dataChanged  bool            // a failed repair's changes to the data partition could not be undone
	resetTrigger string          // cmdline or button: asked for on this boot
	failsafe     string          // why this boot is in failsafe mode; "" = it is not
	gptChecked   map[string]bool // disks whose GPT repairPartitionTables read
	lowers       string          // the stacked layers' lowerdir (stackLayers); "" = /rom
}

// mountItem is one entry of a fixed mount table.
type mountItem struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

// pseudoFS is what the initramfs mounts before anything else. Each is moved
// into the new root by switch_root, so the real init finds them mounted.
var pseudoFS = []mountItem{
	{Source: "proc", Target: "/proc", FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
	{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
}

// Run boots: it returns only when the root could not be built (the error
// says why); on success SwitchRoot replaces this process with the real
// init. Each line is one step in the order it happens; where the overlay's
// upper lives (data partition, RAM, failsafe) is decided in mountRoot.
func (b *Boot) Run() error {
	start := b.now()
	b.state = layout.State{}
	b.gptChecked = nil
	b.lowers = ""
	b.mountPseudoFS()
	b.readCmdline()
	b.trace("start") // Go start-up, /proc /sys /dev /run, the command line
	b.readConfig()
	b.trace("config")
	b.timed(&b.state.Timings.Modules, b.loadModules)
	b.trace("modules")
	b.fault("after-modules")
	b.askForReset()    // kernel command line, reset button
	b.askForFailsafe() // kernel command line, console key
	b.readSlot()       // A/B: which root, and is it on trial
	b.trace("inputs")

	t := b.now()
	root, data, err := b.waitForPartitions()
	b.state.Timings.Devices = ms(b.now().Sub(t))
	if err != nil {
		return err
	}
	b.trace("devices")
	if data != nil && b.failsafe == "" {
		b.growDisk(*data) // a disk larger than the image: before any mount
		b.trace("gpt")
	}

	t = b.now()
	if err := b.mountLower(root); err != nil {
		return err
	}
	b.trace("root")
	if err := b.mountRoot(data); err != nil {
		b.cleanup()
		return err
	}
	if err := b.moveMountsIntoRoot(); err != nil {
		b.cleanup()
		return err
	}
	b.trace("move")
	b.state.Timings.Mounts = ms(b.now().Sub(t))
	b.state.Timings.Total = ms(b.now().Sub(start))

	b.writeState()
	b.startConfirmer() // a trial boot with confirm_after
	b.startWatchdog()  // a trial boot with trial_watchdog
	b.trace("state")
	b.Logf("root ready in %d ms (modules %d ms, devices %d ms, mounts %d ms)",
		b.state.Timings.Total, b.state.Timings.Modules, b.state.Timings.Devices, b.state.Timings.Mounts)
	return b.switchRoot()
}

// trace marks the end of a boot step in the kernel log with
// ovroot.trace: make bench draws the hand-over's timeline from the
// kernel's timestamps of these lines.
func (b *Boot) trace(step string) {
	if b.cmdline.Trace && b.Tracef != nil {
		b.Tracef("trace: %s", step)
	}
}

// mountPseudoFS mounts /proc, /sys, /dev and /run. Already mounted (EBUSY:
// the kernel mounts devtmpfs itself with CONFIG_DEVTMPFS_MOUNT, or this is a
// retry) is fine; any other failure is logged and the boot goes on, since
// later steps report what they miss more precisely.
func (b *Boot) mountPseudoFS() {
	for _, m := range pseudoFS {
		b.mkdir(m.Target)
		err := b.Sys.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data)
		switch {
		case err == nil:
		case errors.Is(err, unix.EBUSY):
			b.Logf("%s already mounted", m.Target)
		default:
			b.Warnf("mount %s on %s: %v", m.FSType, m.Target, err)
		}
	}
	if b.OnPseudoFS != nil {
		b.OnPseudoFS()
	}
}

func (b *Boot) readCmdline() {
	data, err := os.ReadFile(b.path("/proc/cmdline"))
	if err != nil {
		b.Warnf("read kernel command line: %v", err)
	}
	var problems []string
	b.cmdline, problems = parseCmdline(string(data))
	for _, p := range problems {
		b.Warnf("kernel command line: %s", p)
	}
}

// readConfig loads the init config; a broken one boots with defaults, and
// so does one that makes the TOML decoder panic.
func (b *Boot) readConfig() {
	var cfg config.Init
	err := b.guard("read the config", func() (err error) {
		cfg, err = config.LoadInit(b.path(layout.InitConfigPath))
		return err
	})
	if err != nil {
		b.Warnf("config: %v; booting with defaults", err)
		cfg = config.DefaultInit()
	}
	if b.cmdline.Init != "" {
		cfg.Init = b.cmdline.Init
	}
	b.cfg = cfg
}

// loadModules loads the modules the initramfs carries. The list names,
// for each module, the modules it needs (depends=) and wants loaded first
// (softdep pre:); a module starts once those are done, with ModuleWorkers
// loads at a time (finit_module from several threads; by default one, in
// list order). A module whose dependency failed is
// not tried; a module for a CPU feature this CPU lacks (crc32c-intel
// without SSE4.2) is not tried either. A driver for hardware this machine
// lacks (ENODEV: a virtio driver on real hardware) is not a failure; any
// other failure is logged and skipped: the mount that needs the module
// reports the consequence. The lines are logged in list order, whatever
// order the loads finished in.
func (b *Boot) loadModules() {
	list, err := os.ReadFile(b.path(layout.ModuleLoadList))
	if errors.Is(err, os.ErrNotExist) {
		b.Logf("no module list at %s: nothing to load", layout.ModuleLoadList)
		return
	} else if err != nil {
		b.Warnf("read module list %s: %v", layout.ModuleLoadList, err)
		return
	}
	entries, problems := parseLoadList(string(list))
	for _, p := range problems {
		b.Warnf("module list %s: %s", layout.ModuleLoadList, p)
	}
	cpu, cpuErr := os.ReadFile(b.path("/sys/devices/system/cpu/modalias"))
	skip := func(e loadEntry) string {
		if len(e.needs) == 0 || cpuErr != nil || cpuMatches(e.needs, strings.TrimSpace(string(cpu))) {
			return "" // no modalias to check against: try it, as before
		}
		return "this CPU lacks the feature it is for"
	}
	workers := max(b.ModuleWorkers, 1)
	out := loadGraph(entries, workers,
		func(e loadEntry) error { return b.Sys.LoadModule(b.path(e.path)) },
		func(err error) bool { return errors.Is(err, unix.ENODEV) },
		skip, b.now)
	var loaded, absent, failed int
	var took []moduleTime
	for i, o := range out {
		e := entries[i]
		base := filepath.Base(e.path)
		switch {
		case o.depFail:
			b.Warnf("module %s: not loaded: it %s", base, o.skipped)
			failed++
			continue
		case o.skipped != "":
			b.Logf("module %s: not loaded: %s (not needed)", base, o.skipped)
			absent++
			continue
		}
		took = append(took, moduleTime{strings.TrimSuffix(base, ".ko"), o.took})
		switch {
		case o.err == nil:
			loaded++
		case errors.Is(o.err, unix.ENODEV):
			b.Logf("module %s: no such device on this machine (not needed)", base)
			absent++
		default:
			b.Warnf("load module %s: %v", e.path, o.err)
			failed++
		}
	}
	summary := fmt.Sprintf("loaded %d modules", loaded)
	if absent > 0 {
		summary += fmt.Sprintf(" (%d for hardware not present)", absent)
	}
	slow := ""
	if s := slowest(took, 3); s != "" {
		slow = "; slowest: " + s
	}
	slow += fmt.Sprintf("; %d at a time", workers)
	if failed > 0 {
		b.Warnf("%s, %d failed%s", summary, failed, slow)
		return
	}
	b.Logf("%s%s", summary, slow)
}

// moduleTime is how long one module took to load.
type moduleTime struct {
	name string
	d    time.Duration
}

// slowest names the n modules that took longest, longest first
// ("ext4 120 ms, jbd2 40 ms"), so the console shows where the module step's
// time goes.
func slowest(took []moduleTime, n int) string {
	sorted := append([]moduleTime(nil), took...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].d > sorted[j].d })
	var parts []string
	for _, m := range sorted[:min(n, len(sorted))] {
		parts = append(parts, fmt.Sprintf("%s %d ms", m.name, ms(m.d)))
	}
	return strings.Join(parts, ", ")
}

// waitForPartitions polls sysfs until the root and data partitions are
// there or the wait is over. A missing root is an error; a missing data
// partition is returned as nil and handled by Run.
func (b *Boot) waitForPartitions() (root BlockDev, data *BlockDev, err error) {
	if d := b.cmdline.RootDelay; d > 0 {
		b.Logf("rootdelay: waiting %s before looking for partitions", d)
		b.sleep(d)
	}
	rootLabel := b.rootLabel()
	labels := []string{rootLabel, b.cfg.DataLabel}
	timeout := b.cfg.DeviceTimeout.D()
	start := b.now()
	b.Logf("waiting for PARTLABEL %s (timeout %s%s)", strings.Join(labels, ", "), timeout, map[bool]string{true: ", rootwait", false: ""}[b.cmdline.RootWait])
	const poll = 25 * time.Millisecond
	for {
		devs, lerr := b.Sys.BlockDevices()
		if lerr != nil {
			b.Warnf("list block devices: %v", lerr)
		}
		sel, serr := selectPartitions(devs, labels...)
		if serr != nil {
			return root, nil, fmt.Errorf("find partitions: %w", serr)
		}
		if len(sel.Missing) > 0 {
			b.repairPartitionTables(devs) // a primary GPT cut mid-write
		}
		elapsed := b.now().Sub(start)
		rootDev, haveRoot := sel.Found[rootLabel]
		if len(sel.Missing) == 0 || (elapsed >= timeout && (haveRoot || !b.cmdline.RootWait)) {
			for _, w := range sel.Warnings {
				b.Warnf("%s", w)
			}
			if !haveRoot {
				what := rootLabel
				if b.cmdline.Slot != "" {
					what += " (the root of slot " + string(b.cmdline.Slot) + ")"
				}
				return root, nil, fmt.Errorf("no partition labelled %s after %s; block devices: %s",
					what, timeout, describeDevices(devs))
			}
			b.state.RootDevice = rootDev.Path()
			if d, ok := sel.Found[b.cfg.DataLabel]; ok {
				b.state.DataDevice = d.Path()
				b.Logf("found %s=%s %s=%s in %d ms", rootLabel, rootDev.Path(), b.cfg.DataLabel, d.Path(), ms(elapsed))
				return rootDev, &d, nil
			}
			b.Warnf("no partition labelled %s after %s; block devices: %s", b.cfg.DataLabel, timeout, describeDevices(devs))
			return rootDev, nil, nil
		}
		b.sleep(poll)
	}
}

func (b *Boot) mountLower(dev BlockDev) error {
	b.mkdir(layout.RomDir)
	src, err := b.checkRoot(dev)
	if err != nil {
		return err
	}
	if err := b.Sys.Mount(src, layout.RomDir, "squashfs", unix.MS_RDONLY, ""); err != nil {
		// Say what the partition holds when it is not a squashfs at all
		// (a label on the wrong partition, a root overwritten): probed
		// only now, so a good boot reads nothing more.
		if c, perr := b.Sys.Probe(dev.Path()); perr == nil && c != ContentSquashfs {
			return fmt.Errorf("root partition %s holds %s content, not squashfs: not mounted (mount said: %w)", dev, c, err)
		}
		return fmt.Errorf("mount lower %s on %s: %w", dev, layout.RomDir, err)
	}
	b.Logf("mounted %s (squashfs, ro) on %s", src, layout.RomDir)
	return b.stackLayers(src)
}

// IntegrityError is a root that failed its dm-verity check at boot (or
// whose ovroot.verity= cannot be used to check it).
type IntegrityError struct {
	Label string // the root partition's label (or path)
	Err   error
}

func (e *IntegrityError) Error() string {
	return "root integrity failure on " + e.Label + ": " + e.Err.Error()
}
func (e *IntegrityError) Unwrap() error { return e.Err }

// checkRoot is the device the root is mounted from: with ovroot.verity=,
// the partition mapped through dm-verity after every block of it was
// checked; otherwise the partition itself.
func (b *Boot) checkRoot(dev BlockDev) (string, error) {
	label := dev.PartLabel
	if label == "" {
		label = dev.Path()
	}
	if err := b.cmdline.VerityErr; err != nil {
		b.Warnf("root integrity failure on %s: %v: not mounting a root that cannot be checked", label, err)
		return "", &IntegrityError{Label: label, Err: err}
	}
	v := b.cmdline.Verity
	if v == nil {
		return dev.Path(), nil
	}
	t := b.now()
	node, err := b.Sys.OpenVerity(dev.Path(), *v)
	if err != nil {
		b.Warnf("root integrity failure on %s: %v", label, err)
		return "", &IntegrityError{Label: label, Err: err}
	}
	took := b.now().Sub(t)
	b.state.Verity = &layout.VerityState{RootHash: fmt.Sprintf("%x", v.RootHash), Device: node, Blocks: v.DataBlocks, CheckMS: ms(took)}
	b.Logf("verity: %s checked, all %d blocks match root hash %s (%d ms); mounted through %s", dev.Path(), v.DataBlocks, hexShort(v.RootHash), ms(took), node)
	return node, nil
}

// mountOverlay stacks the root (Documentation/filesystems/overlayfs.rst):
// workdir must be an empty directory on the same filesystem as upperdir,
// which is why both live on /overlay.
func (b *Boot) mountOverlay() error {
	upper, work := b.upperDirs()
	for _, d := range []string{upper, work, layout.NewRootDir} {
		if err := os.MkdirAll(b.path(d), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", b.lowerDirs(), upper, work)
	if err := b.Sys.Mount("overlay", layout.NewRootDir, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay (%s) on %s: %w", opts, layout.NewRootDir, err)
	}
	if b.state.Mode == "" {
		b.state.Mode = layout.ModePersistent
	}
	b.Logf("mounted overlay on %s (%s, upper %s)", layout.NewRootDir, b.state.Mode, upper)
	return nil
}

// moveMountsIntoRoot makes /rom and /overlay visible in the new root, as on
// OpenWRT. The mount points are created through the overlay (in the upper)
// when the factory root lacks them.
func (b *Boot) moveMountsIntoRoot() error {
	for _, m := range []string{layout.RomDir, layout.OverlayDir} {
		target := filepath.Join(layout.NewRootDir, m)
		if err := os.MkdirAll(b.path(target), 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", target, err)
		}
		if err := b.Sys.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to %s: %w", m, target, err)
		}
	}
	return nil
}

func (b *Boot) writeState() {
	data, err := json.MarshalIndent(b.state, "", "  ")
	if err == nil {
		if err = os.MkdirAll(b.path(layout.RunDir), 0o755); err == nil {
			err = os.WriteFile(b.path(layout.StateFile), append(data, '\n'), 0o644)
		}
	}
	if err != nil {
		b.Warnf("write %s: %v", layout.StateFile, err)
	}
}

func (b *Boot) switchRoot() error {
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		if hwm, ok := peakRSS(status); ok {
			b.Logf("init peak memory: %s (VmHWM)", hwm)
		}
	}
	b.Logf("switching to %s", b.cfg.Init)
	b.trace("logs") // the lines above, on the console
	if err := b.Sys.SwitchRoot(layout.NewRootDir, b.cfg.Init); err != nil {
		b.cleanup()
		return fmt.Errorf("switch_root to %s, init %s: %w", layout.NewRootDir, b.cfg.Init, err)
	}
	return nil
}

// cleanup undoes the mounts of a failed attempt so the next one starts clean.
func (b *Boot) cleanup() {
	for _, m := range []string{
		filepath.Join(layout.NewRootDir, layout.OverlayDir),
		filepath.Join(layout.NewRootDir, layout.RomDir),
		layout.NewRootDir, layout.OverlayDir, layout.RomDir,
	} {
		b.Sys.Unmount(m)
	}
	b.undoLayers()
}

// State is the record of this boot (valid after Run).
func (b *Boot) State() layout.State { return b.state }

func (b *Boot) mkdir(p string) {
	if err := os.MkdirAll(b.path(p), 0o755); err != nil {
		b.Warnf("create %s: %v", p, err)
	}
}

func (b *Boot) path(p string) string {
	if b.Root == "" {
		return p
	}
	return filepath.Join(b.Root, p)
}

func (b *Boot) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *Boot) sleep(d time.Duration) {
	if b.Sleep != nil {
		b.Sleep(d)
		return
	}
	time.Sleep(d)
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// timed runs step and stores its duration in ms.
func (b *Boot) timed(ms *int64, step func()) {
	t := b.now()
	step()
	*ms = b.now().Sub(t).Milliseconds()
}
