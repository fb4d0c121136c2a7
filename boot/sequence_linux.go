package boot

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
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
	Now   func() time.Time
	Sleep func(time.Duration)
	// OnPseudoFS runs once /proc, /sys and /dev are mounted (the logger
	// attaches to /dev/kmsg there).
	OnPseudoFS func()

	cfg          config.Init
	cmdline      Cmdline
	state        State
	resetTrigger string // cmdline or button: asked for on this boot
	failsafe     string // why this boot is in failsafe mode; "" = it is not
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
// says why); on success SwitchRoot replaces this process with the real init.
func (b *Boot) Run() error {
	start := b.now()
	b.state = State{}
	b.mountPseudoFS()
	if b.OnPseudoFS != nil {
		b.OnPseudoFS()
	}
	b.readCmdline()
	b.readConfig()

	t := b.now()
	b.loadModules()
	b.state.Timings.Modules = ms(b.now().Sub(t))
	b.resetTrigger = ""
	if b.cmdline.Reset {
		b.resetTrigger = reset.TriggerCmdline
		b.Warnf("factory reset asked for on the kernel command line (ovroot.reset)")
	}
	b.watchResetButton()
	b.failsafe = ""
	if b.cmdline.Failsafe {
		b.failsafe = "ovroot.failsafe on the kernel command line"
	} else {
		b.watchFailsafeKey()
	}

	t = b.now()
	root, data, err := b.waitForPartitions()
	b.state.Timings.Devices = ms(b.now().Sub(t))
	if err != nil {
		return err
	}

	t = b.now()
	if err := b.mountLower(root); err != nil {
		return err
	}
	// The one place that decides between a persistent, a volatile and a
	// failsafe upper.
	persistent := false
	if b.failsafe != "" {
		b.goFailsafe(data)
	} else if data == nil {
		b.goVolatile(fmt.Sprintf("no partition labelled %s", b.cfg.DataLabel))
	} else if err := b.mountData(*data); err != nil {
		b.goVolatile(err.Error())
	} else if err := b.factoryReset(); err != nil {
		b.Sys.Unmount(layout.OverlayDir)
		b.goVolatile(err.Error())
	} else {
		persistent = true
		b.keepHeadroom()
	}
	if !persistent && b.resetTrigger != "" {
		b.Warnf("factory reset (trigger=%s) not stored: the data partition is not in use; this boot starts from the factory root anyway", b.resetTrigger)
	}
	if err := b.mountOverlay(); err != nil {
		if !persistent {
			b.cleanup()
			return err
		}
		b.Sys.Unmount(layout.OverlayDir)
		b.goVolatile(err.Error())
		if err := b.mountOverlay(); err != nil {
			b.cleanup()
			return err
		}
	}
	if persistent {
		b.collectTrash()
	}
	if err := b.moveMountsIntoRoot(); err != nil {
		b.cleanup()
		return err
	}
	b.state.Timings.Mounts = ms(b.now().Sub(t))
	b.state.Timings.Total = ms(b.now().Sub(start))

	b.writeState()
	b.Logf("root ready in %d ms (modules %d ms, devices %d ms, mounts %d ms)",
		b.state.Timings.Total, b.state.Timings.Modules, b.state.Timings.Devices, b.state.Timings.Mounts)
	return b.switchRoot()
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
}

func (b *Boot) readCmdline() {
	data, err := os.ReadFile(b.path("/proc/cmdline"))
	if err != nil {
		b.Warnf("read kernel command line: %v", err)
	}
	var problems []string
	b.cmdline, problems = ParseCmdline(string(data))
	for _, p := range problems {
		b.Warnf("kernel command line: %s", p)
	}
}

// readConfig loads the init config; a broken one boots with defaults.
func (b *Boot) readConfig() {
	cfg, err := config.LoadInit(b.path(layout.InitConfigPath))
	if err != nil {
		b.Warnf("config: %v; booting with defaults", err)
	}
	if b.cmdline.Init != "" {
		cfg.Init = b.cmdline.Init
	}
	b.cfg = cfg
}

// loadModules loads the modules the initramfs carries, in the order the host
// tool resolved (dependencies first). A module that fails is logged and
// skipped: the mount that needs it reports the consequence.
func (b *Boot) loadModules() {
	list, err := os.ReadFile(b.path(layout.ModuleLoadList))
	if errors.Is(err, os.ErrNotExist) {
		b.Logf("no module list at %s: nothing to load", layout.ModuleLoadList)
		return
	} else if err != nil {
		b.Warnf("read module list %s: %v", layout.ModuleLoadList, err)
		return
	}
	var loaded, failed int
	sc := bufio.NewScanner(bytes.NewReader(list))
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if err := b.Sys.LoadModule(b.path(p)); err != nil {
			b.Warnf("load module %s: %v", p, err)
			failed++
			continue
		}
		loaded++
	}
	if failed > 0 {
		b.Warnf("loaded %d modules, %d failed", loaded, failed)
		return
	}
	b.Logf("loaded %d modules", loaded)
}

// waitForPartitions polls sysfs until the root and data partitions are
// there or the wait is over. A missing root is an error; a missing data
// partition is returned as nil and handled by Run.
func (b *Boot) waitForPartitions() (root BlockDev, data *BlockDev, err error) {
	if d := b.cmdline.RootDelay; d > 0 {
		b.Logf("rootdelay: waiting %s before looking for partitions", d)
		b.sleep(d)
	}
	labels := []string{b.cfg.RootLabel, b.cfg.DataLabel}
	timeout := b.cfg.DeviceTimeout.D()
	start := b.now()
	b.Logf("waiting for PARTLABEL %s (timeout %s%s)", strings.Join(labels, ", "), timeout, map[bool]string{true: ", rootwait", false: ""}[b.cmdline.RootWait])
	const poll = 25 * time.Millisecond
	for {
		devs, lerr := b.Sys.BlockDevices()
		if lerr != nil {
			b.Warnf("list block devices: %v", lerr)
		}
		sel, serr := SelectPartitions(devs, labels...)
		if serr != nil {
			return root, nil, fmt.Errorf("find partitions: %w", serr)
		}
		elapsed := b.now().Sub(start)
		rootDev, haveRoot := sel.Found[b.cfg.RootLabel]
		if len(sel.Missing) == 0 || (elapsed >= timeout && (haveRoot || !b.cmdline.RootWait)) {
			for _, w := range sel.Warnings {
				b.Warnf("%s", w)
			}
			if !haveRoot {
				return root, nil, fmt.Errorf("no partition labelled %s after %s; block devices: %s",
					b.cfg.RootLabel, timeout, DescribeDevices(devs))
			}
			b.state.RootDevice = rootDev.Path()
			if d, ok := sel.Found[b.cfg.DataLabel]; ok {
				b.state.DataDevice = d.Path()
				b.Logf("found %s=%s %s=%s in %d ms", b.cfg.RootLabel, rootDev.Path(), b.cfg.DataLabel, d.Path(), ms(elapsed))
				return rootDev, &d, nil
			}
			b.Warnf("no partition labelled %s after %s; block devices: %s", b.cfg.DataLabel, timeout, DescribeDevices(devs))
			return rootDev, nil, nil
		}
		b.sleep(poll)
	}
}

func (b *Boot) mountLower(dev BlockDev) error {
	b.mkdir(layout.RomDir)
	if err := b.Sys.Mount(dev.Path(), layout.RomDir, "squashfs", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount lower %s on %s: %w", dev, layout.RomDir, err)
	}
	b.Logf("mounted %s (squashfs, ro) on %s", dev.Path(), layout.RomDir)
	return nil
}

// mountData mounts the data partition at /overlay, formatting it first when
// it is blank. A filesystem that does not mount gets one repair attempt.
// Anything that still cannot be mounted is left alone (it may hold
// someone's data) unless the config says on_corrupt = "format".
func (b *Boot) mountData(dev BlockDev) error {
	content, err := b.Sys.Probe(dev.Path())
	if err != nil {
		return fmt.Errorf("probe data partition %s: %w", dev, err)
	}
	fstype := b.cfg.DataFSType
	var problem error
	switch content {
	case ContentBlank:
		b.Warnf("data partition %s is blank: formatting it %s (first boot)", dev, fstype)
		if err := b.format(dev); err != nil {
			return err
		}
		return b.mountDataFS(dev)
	case Content(fstype):
		err := b.mountDataFS(dev)
		if err == nil {
			return nil
		}
		b.Warnf("%v", err)
		problem = b.repairAndMount(dev, err)
	case ContentExt4Damaged:
		b.Warnf("data partition %s: %s", dev, content)
		problem = b.repairAndMount(dev, fmt.Errorf("data partition %s: %s", dev, content))
	default:
		problem = fmt.Errorf("data partition %s holds %s content, not %s", dev, content, fstype)
	}
	if problem == nil {
		return nil
	}
	if b.cfg.OnCorrupt != "format" {
		return fmt.Errorf("%w: leaving it untouched (on_corrupt = keep)", problem)
	}
	b.Warnf("%v: formatting it %s because on_corrupt = format; its old content is lost", problem, fstype)
	if err := b.format(dev); err != nil {
		return err
	}
	b.state.Warnings = append(b.state.Warnings, fmt.Sprintf("data partition was reformatted (on_corrupt = format): %v", problem))
	return b.mountDataFS(dev)
}

// repairAndMount runs one repair and mounts again; it returns nil when the
// filesystem is mounted, else why not.
func (b *Boot) repairAndMount(dev BlockDev, cause error) error {
	fstype := b.cfg.DataFSType
	b.Warnf("repairing %s (%s)", dev.Path(), fstype)
	t := b.now()
	out, err := b.Sys.Repair(dev.Path(), fstype)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			b.Logf("fsck: %s", l)
		}
	}
	if err != nil {
		return fmt.Errorf("%v; repair failed: %w", cause, err)
	}
	b.Warnf("repaired %s in %d ms", dev.Path(), ms(b.now().Sub(t)))
	b.state.Warnings = append(b.state.Warnings, fmt.Sprintf("data partition was repaired at boot: %v", cause))
	if err := b.mountDataFS(dev); err != nil {
		return fmt.Errorf("%v; repaired, but: %w", cause, err)
	}
	return nil
}

func (b *Boot) format(dev BlockDev) error {
	fstype := b.cfg.DataFSType
	t := b.now()
	if err := b.Sys.Format(dev.Path(), fstype, b.cfg.DataLabel); err != nil {
		return fmt.Errorf("format %s as %s: %w", dev, fstype, err)
	}
	b.state.Formatted = true
	b.Logf("formatted %s as %s in %d ms", dev.Path(), fstype, ms(b.now().Sub(t)))
	return nil
}

func (b *Boot) mountDataFS(dev BlockDev) error {
	fstype := b.cfg.DataFSType
	b.mkdir(layout.OverlayDir)
	if err := b.Sys.Mount(dev.Path(), layout.OverlayDir, fstype, unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount data %s on %s: %w", dev, layout.OverlayDir, err)
	}
	b.Logf("mounted %s (%s, rw) on %s", dev.Path(), fstype, layout.OverlayDir)
	return nil
}

// watchResetButton watches for the reset button during the configured
// boot window (off by default).
func (b *Boot) watchResetButton() {
	r := b.cfg.Reset
	if r.ButtonWindow <= 0 {
		return
	}
	code, err := config.KeyCode(r.ButtonKey)
	if err != nil {
		b.Warnf("reset button: %v", err)
		return
	}
	dev := r.ButtonDevice
	if dev == "" {
		dev = "any input device"
	}
	b.Logf("reset button: hold %s (code %d) on %s for %s within %s for a factory reset", r.ButtonKey, code, dev, r.ButtonHold, r.ButtonWindow)
	held, err := b.Sys.WaitForKey(r.ButtonDevice, code, r.ButtonHold.D(), r.ButtonWindow.D())
	if err != nil {
		b.Warnf("reset button: %v", err)
	}
	if held {
		b.resetTrigger = reset.TriggerButton
		b.Warnf("reset button held for %s: factory reset", r.ButtonHold)
	}
}

// factoryReset stores a reset asked for on this boot (so a power cut cannot
// lose it) and performs any pending reset on the data filesystem mounted at
// /overlay, before the overlay is stacked. An error leaves the request in
// place for the next boot.
func (b *Boot) factoryReset() error {
	dir := b.path(layout.OverlayDir)
	if b.resetTrigger != "" {
		if err := reset.Schedule(dir, b.resetTrigger, b.now()); err != nil {
			return fmt.Errorf("factory reset (trigger=%s): record the request: %w", b.resetTrigger, err)
		}
	}
	req, err := reset.Pending(dir)
	if err != nil {
		return fmt.Errorf("factory reset: read the request: %w", err)
	}
	if req == nil {
		return nil
	}
	b.Warnf("factory reset (trigger=%s): starting", req.Trigger)
	r := &reset.Resetter{Dir: dir, Keep: b.cfg.Reset.Keep, Now: b.now}
	if d := b.cmdline.ResetStepDelay; d > 0 {
		r.Before = func(step string) error {
			b.Logf("factory reset step %s (delayed %s)", step, d)
			b.sleep(d)
			return nil
		}
	}
	rec, err := r.Perform()
	if err != nil {
		return fmt.Errorf("factory reset (trigger=%s) failed: %w; the request stays and the next boot tries again", req.Trigger, err)
	}
	resumed := ""
	if rec.Resumed {
		resumed = ", finishing an interrupted reset"
	}
	b.Warnf("factory reset (trigger=%s, kept %d paths%s) in %d ms", rec.Trigger, len(rec.Kept), resumed, rec.DurationMS)
	b.state.Reset = rec
	return nil
}

// reserveBytes is the size of the reserve file kept on the data
// filesystem, released when the filesystem is full so the overlay still
// mounts read-write (it needs room for its work directory).
const reserveBytes = 1 << 20

// keepHeadroom releases the reserve when the data filesystem is full and
// puts it back when there is room again.
func (b *Boot) keepHeadroom() {
	dir := b.path(layout.OverlayDir)
	meta := filepath.Join(dir, reset.MetaDir)
	reserve := filepath.Join(meta, "reserve")
	_, statErr := os.Stat(reserve)
	haveReserve := statErr == nil
	free, err := b.Sys.FreeBytes(dir)
	if err != nil {
		b.Warnf("free space of %s: %v", layout.OverlayDir, err)
		return
	}
	if free >= 8*reserveBytes {
		if !haveReserve {
			// Written, not fallocated: the blocks must really be taken.
			err := os.MkdirAll(meta, 0o700)
			if err == nil {
				err = reset.WriteAtomic(meta, "reserve", make([]byte, reserveBytes))
			}
			if err != nil {
				b.Warnf("create the reserve %s: %v", reserve, err)
			}
		}
		return
	}
	// Little room by statfs: does what the overlay needs still fit?
	room, err := b.Sys.CanWrite(dir, reserveBytes/4)
	if err != nil {
		b.Warnf("free space of %s: %v", layout.OverlayDir, err)
		return
	}
	if room {
		return
	}
	var msg string
	if haveReserve {
		if err := os.Remove(reserve); err != nil {
			b.Warnf("data partition full: release the reserve: %v", err)
			return
		}
		msg = fmt.Sprintf("data partition full: released the %d KiB reserve so the root stays writable; delete files to make room", reserveBytes>>10)
	} else {
		msg = "data partition full and no reserve left to release; delete files to make room"
	}
	b.Warnf("%s", msg)
	b.state.Warnings = append(b.state.Warnings, msg)
}

// collectTrash starts the background deletion of uppers retired by resets.
func (b *Boot) collectTrash() {
	n := reset.TrashCount(b.path(layout.OverlayDir))
	if n == 0 {
		return
	}
	trash := filepath.Join(layout.OverlayDir, reset.MetaDir, reset.TrashDir)
	if err := b.Sys.StartTrashCollector(b.path(trash)); err != nil {
		b.Warnf("start deleting %d retired upper and work trees in %s: %v (tried again next boot)", n, trash, err)
		return
	}
	b.Logf("deleting %d retired upper and work trees in %s in the background", n, trash)
}

// watchFailsafeKey offers failsafe mode on the console for the configured
// window (off by default), as OpenWRT's preinit does.
func (b *Boot) watchFailsafeKey() {
	w := b.cfg.FailsafeWindow.D()
	if w <= 0 {
		return
	}
	b.Logf("press f and Enter within %s for failsafe mode", w)
	line, err := b.Sys.ReadConsoleLine(w)
	if err != nil {
		b.Warnf("failsafe prompt: %v", err)
		return
	}
	if strings.TrimSpace(line) == "f" {
		b.failsafe = "f pressed on the console"
	}
}

// goFailsafe boots the factory root with a tmpfs upper and, for rescue,
// the data partition read-only at /overlay (when it holds the data
// filesystem): nothing on it is formatted, repaired, reset or changed.
func (b *Boot) goFailsafe(data *BlockDev) {
	b.state.Mode = ModeFailsafe
	b.state.Reason = b.failsafe
	b.Warnf("**********************************************************")
	b.Warnf("FAILSAFE: %s", b.failsafe)
	b.Warnf("factory root with a RAM upper; data partition read-only at %s", layout.OverlayDir)
	b.Warnf("**********************************************************")
	b.mkdir(layout.OverlayDir)
	if data == nil {
		b.Warnf("failsafe: no partition labelled %s to mount for rescue", b.cfg.DataLabel)
		return
	}
	content, err := b.Sys.Probe(data.Path())
	if err != nil || content != Content(b.cfg.DataFSType) {
		b.Warnf("failsafe: data partition %s not mounted (holds %s content, %v)", data, content, err)
		return
	}
	if err := b.Sys.Mount(data.Path(), layout.OverlayDir, b.cfg.DataFSType, unix.MS_RDONLY|unix.MS_NOATIME, ""); err != nil {
		b.Warnf("failsafe: mount %s read-only on %s: %v", data, layout.OverlayDir, err)
		return
	}
	b.state.DataDevice = data.Path()
	b.Logf("failsafe: mounted %s (%s, ro) on %s", data.Path(), b.cfg.DataFSType, layout.OverlayDir)
}

// upperDirs are the overlay's upper and work directories: on /overlay,
// except in failsafe mode, where they are on the /run tmpfs.
func (b *Boot) upperDirs() (upper, work string) {
	base := layout.OverlayDir
	if b.state.Mode == ModeFailsafe {
		base = filepath.Join(layout.RunDir, "failsafe")
	}
	return filepath.Join(base, layout.UpperName), filepath.Join(base, layout.WorkName)
}

// goVolatile puts a tmpfs at /overlay: the device boots, but nothing written
// survives a power-off. Said loudly, and recorded for ovrootctl status.
func (b *Boot) goVolatile(reason string) {
	b.state.Mode = ModeVolatile
	b.state.Reason = reason
	b.Warnf("**********************************************************")
	b.Warnf("VOLATILE: %s", reason)
	b.Warnf("changes made on this boot will be LOST at power-off")
	b.Warnf("**********************************************************")
	b.mkdir(layout.OverlayDir)
	if err := b.Sys.Mount("tmpfs", layout.OverlayDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		b.Warnf("mount tmpfs on %s: %v", layout.OverlayDir, err)
	}
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
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", layout.RomDir, upper, work)
	if err := b.Sys.Mount("overlay", layout.NewRootDir, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay (%s) on %s: %w", opts, layout.NewRootDir, err)
	}
	if b.state.Mode == "" {
		b.state.Mode = ModePersistent
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
			err = os.WriteFile(b.path(StateFile), append(data, '\n'), 0o644)
		}
	}
	if err != nil {
		b.Warnf("write %s: %v", StateFile, err)
	}
}

func (b *Boot) switchRoot() error {
	b.Logf("switching to %s", b.cfg.Init)
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
}

// State is the record of this boot (valid after Run).
func (b *Boot) State() State { return b.state }

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
