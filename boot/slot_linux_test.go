package boot

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
	"golang.org/x/sys/unix"
)

func slotDisk() []BlockDev {
	return []BlockDev{disk("vda", 0), part("vda", 1, "boot", 0), part("vda", 2, "rootfs_a", 0), part("vda", 3, "rootfs_b", 0), part("vda", 4, "rootfs_data", 0)}
}

// efiVar is an efivarfs file: attributes, then UTF-16LE with a NUL.
func efiVar(s string) []byte {
	b := []byte{7, 0, 0, 0}
	for _, c := range append(utf16.Encode([]rune(s)), 0) {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return b
}

// withBootCount makes /sys/firmware/efi and systemd-boot's
// LoaderBootCountPath naming entry.
func withBootCount(entry string) func(root string) {
	return func(root string) {
		dir := filepath.Join(root, efivarsDir)
		os.MkdirAll(dir, 0o755)
		if entry != "" {
			os.WriteFile(filepath.Join(dir, bootCountVar), efiVar(entry), 0o644)
		}
	}
}

func TestCmdlineSlot(t *testing.T) {
	for _, c := range []struct {
		line     string
		slot     layout.Slot
		build    string
		problems int
	}{
		{"ovroot.slot=b ovroot.build=0123456789abcdef", "b", "0123456789abcdef", 0},
		{"ovroot.slot=a", "a", "", 0},
		{"ovroot.slot=c ovroot.build=XYZ", "", "", 2},
		{"ovroot.slot= ovroot.build=", "", "", 2},
		{"console=ttyS0", "", "", 0},
		{"ovroot.slot=b ovroot.try=4/0x3", "b", "", 1},
		{"ovroot.slot=b ovroot.try=", "b", "", 1},
	} {
		got, problems := parseCmdline(c.line)
		if got.Slot != c.slot || got.BuildID != c.build || len(problems) != c.problems || got.TryOf != 0 {
			t.Errorf("%q: slot %q build %q try %d/%d problems %q; want %q %q %d", c.line, got.Slot, got.BuildID, got.TryDone, got.TryOf, problems, c.slot, c.build, c.problems)
		}
	}
}

// U-Boot's boot.scr says a boot is a trial on the command line: try 2 of
// 3 leaves 1 try, whatever an EFI variable says.
func TestBootSlotTrialUBoot(t *testing.T) {
	e := &bootEnv{
		cmdline: "ovroot.loader=uboot ovroot.slot=b ovroot.build=00000000000000bb ovroot.try=2/0x3",
		sys:     &fakeSys{devs: slotDisk(), probe: map[string]Content{"/dev/vda4": ContentExt4}},
	}
	b, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	st := b.State().Slot
	if st == nil || st.Trial == nil || *st.Trial != (layout.Trial{Entry: "loader/entries/ovroot-b.env", Left: 1, Done: 2}) || !b.InTrial() {
		t.Fatalf("slot state = %+v (trial %+v)", st, st.Trial)
	}
	// Without ovroot.try= a U-Boot boot is confirmed.
	e.cmdline = "ovroot.loader=uboot ovroot.slot=b ovroot.build=00000000000000bb"
	e.sys = &fakeSys{devs: slotDisk(), probe: map[string]Content{"/dev/vda4": ContentExt4}}
	if b, err = e.run(t); err != nil || b.InTrial() {
		t.Errorf("a boot without ovroot.try= is a trial: %v %v", err, b.InTrial())
	}
}

// A slotted boot mounts its slot's root, and records the slot, the trial
// systemd-boot counted, and the build the fresh upper was made on.
func TestBootSlotTrial(t *testing.T) {
	e := &bootEnv{
		cmdline: "ovroot.slot=b ovroot.build=00000000000000bb",
		sys:     &fakeSys{devs: slotDisk(), probe: map[string]Content{"/dev/vda4": ContentBlank}},
		setup:   withBootCount(`\loader\entries\ovroot-b+2-1.conf`),
	}
	b, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(e.sys.calls, fmt.Sprintf("mount /dev/vda3 /rom squashfs %#x ", unix.MS_RDONLY)) {
		t.Errorf("slot b's root (rootfs_b, vda3) not mounted at /rom:\n%s", strings.Join(e.sys.calls, "\n"))
	}
	st := b.State().Slot
	if st == nil || st.Slot != "b" || st.BuildID != "00000000000000bb" || st.Trial == nil ||
		*st.Trial != (layout.Trial{Entry: "loader/entries/ovroot-b+2-1.conf", Left: 2, Done: 1}) {
		t.Fatalf("slot state = %+v (trial %+v)", st, st.Trial)
	}
	if !b.InTrial() || st.UpperBuild != "00000000000000bb" || st.UpperOtherBuild {
		t.Errorf("in trial %v, upper build %q other %v", b.InTrial(), st.UpperBuild, st.UpperOtherBuild)
	}
	var rec layout.UpperBuild
	data, err := os.ReadFile(filepath.Join(e.root, layout.Meta(layout.OverlayDir, layout.UpperBuildFile)))
	if err != nil || json.Unmarshal(data, &rec) != nil || rec.BuildID != "00000000000000bb" || rec.Slot != "b" {
		t.Errorf("upper build record %q, %v", data, err)
	}
}

// /sys/firmware/efi is there but efivarfs is not mounted yet (the kernel
// mounts it only when asked): the init must mount it and then read
// LoaderBootCountPath, or a trial boot passes for a confirmed one and a
// root that fails is never abandoned.
func TestBootSlotTrialMountsEfivarfs(t *testing.T) {
	var root string
	sys := &fakeSys{devs: slotDisk(), probe: map[string]Content{"/dev/vda4": ContentExt4}}
	sys.onMount = func(source, target, fstype string) {
		if fstype == "efivarfs" && target == efivarsDir {
			withBootCount(`\loader\entries\ovroot-b+1-2.conf`)(root)
		}
	}
	e := &bootEnv{
		cmdline: "ovroot.slot=b ovroot.build=00000000000000bb",
		sys:     sys,
		setup: func(r string) {
			root = r
			os.MkdirAll(filepath.Join(r, efivarsDir), 0o755) // the mount point, empty
		},
	}
	b, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("mount efivarfs %s efivarfs %#x ", efivarsDir, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC)
	if !slices.Contains(sys.calls, want) {
		t.Errorf("efivarfs not mounted (want %q):\n%s", want, strings.Join(sys.calls, "\n"))
	}
	st := b.State().Slot
	if st == nil || st.Trial == nil || *st.Trial != (layout.Trial{Entry: "loader/entries/ovroot-b+1-2.conf", Left: 1, Done: 2}) || !b.InTrial() {
		t.Fatalf("slot state = %+v, want a trial of loader/entries/ovroot-b+1-2.conf (1 left, 2 done)", st)
	}
}

// A confirmed entry (no counter: no LoaderBootCountPath) is not a trial;
// an upper made on another build is flagged and its record kept.
func TestBootSlotConfirmedOtherBuild(t *testing.T) {
	e := &bootEnv{
		cmdline: "ovroot.slot=a ovroot.build=00000000000000aa",
		sys:     &fakeSys{devs: slotDisk(), probe: map[string]Content{"/dev/vda4": ContentExt4}},
		setup: func(root string) {
			withBootCount("")(root)
			meta := filepath.Join(root, layout.OverlayDir, layout.MetaDir)
			os.MkdirAll(meta, 0o755)
			os.WriteFile(filepath.Join(meta, layout.UpperBuildFile), []byte(`{"build_id":"00000000000000ff","slot":"b"}`), 0o644)
		},
	}
	b, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	st := b.State().Slot
	if st == nil || st.Trial != nil || b.InTrial() || st.UpperBuild != "00000000000000ff" || !st.UpperOtherBuild {
		t.Fatalf("slot state = %+v", st)
	}
	// A counted entry of the other slot is not this boot's trial.
	e.setup = withBootCount(`\loader\entries\ovroot-b+1-2.conf`)
	e.sys = &fakeSys{devs: slotDisk(), probe: map[string]Content{"/dev/vda4": ContentExt4}}
	if b, err = e.run(t); err != nil || b.InTrial() {
		t.Errorf("another slot's counter made a trial: %v %v", err, b.InTrial())
	}
}

// A trial boot that builds no root logs why in the data partition's slot
// log and reboots; a confirmed boot with the same failure does not count
// as a trial (the caller goes to the rescue path as before).
func TestFailTrialRebootsAndRecords(t *testing.T) {
	e := &bootEnv{
		cmdline: "ovroot.slot=b ovroot.build=00000000000000bb",
		sys: &fakeSys{devs: slotDisk(), probe: map[string]Content{"/dev/vda4": ContentExt4},
			mountErr: map[string]error{layout.RomDir: unix.EINVAL}},
		setup: withBootCount(`\loader\entries\ovroot-b+0-3.conf`),
	}
	b, err := e.run(t)
	if err == nil || !strings.Contains(err.Error(), "mount lower /dev/vda3") {
		t.Fatalf("Attempt() = %v, want the lower mount's error", err)
	}
	if !b.InTrial() {
		t.Fatal("a counted boot of this slot is not a trial")
	}
	rebooted := 0
	b.Reboot = func() error { rebooted++; return nil }
	e.sys.calls = nil
	b.FailTrial(err)
	if rebooted != 1 {
		t.Errorf("rebooted %d times, want 1", rebooted)
	}
	want := []string{fmt.Sprintf("mount /dev/vda4 /overlay ext4 %#x ", unix.MS_NOATIME), "umount /overlay"}
	if !slices.Equal(e.sys.calls, want) {
		t.Errorf("calls %q, want %q", e.sys.calls, want)
	}
	data, _ := os.ReadFile(filepath.Join(e.root, layout.Meta(layout.OverlayDir, layout.SlotLogFile)))
	var ev layout.SlotEvent
	if json.Unmarshal(data, &ev) != nil || ev.Event != "trial-failed" || ev.Slot != "b" || !strings.Contains(ev.Reason, "mount lower") {
		t.Errorf("slot log %q", data)
	}
	if !e.warned("trial boot of slot b (build 00000000000000bb) failed") {
		t.Errorf("no console line for the failed trial: %q", e.warnings)
	}

	// The same failure on a confirmed slot is not a trial.
	e.setup = withBootCount("")
	e.sys = &fakeSys{devs: slotDisk(), mountErr: map[string]error{layout.RomDir: unix.EINVAL}}
	if b, err = e.run(t); err == nil || b.InTrial() {
		t.Errorf("confirmed slot: err %v, in trial %v", err, b.InTrial())
	}
}

// A missing slot partition names the label and the slot.
func TestBootSlotMissing(t *testing.T) {
	e := &bootEnv{
		cmdline: "ovroot.slot=b",
		config:  "device_timeout = \"100ms\"\n",
		sys:     &fakeSys{devs: standardDisk()},
	}
	_, err := e.run(t)
	if err == nil || !strings.Contains(err.Error(), "no partition labelled rootfs_b (the root of slot b)") {
		t.Errorf("err = %v", err)
	}
	_ = errors.New
}

// The confirmer starts only for a trial boot with confirm_after set.
func TestConfirmerOnlyForTrials(t *testing.T) {
	for _, c := range []struct {
		trial bool
		after time.Duration
		want  int
	}{{true, 5 * time.Second, 1}, {true, 0, 0}, {false, 5 * time.Second, 0}} {
		b := &Boot{Logf: t.Logf, Warnf: t.Logf}
		b.cfg.ConfirmAfter = config.OffDuration(c.after)
		b.state.Slot = &layout.SlotState{Slot: "b"}
		if c.trial {
			b.state.Slot.Trial = &layout.Trial{Left: 1}
		}
		n := 0
		b.StartConfirmer = func(root string, after time.Duration, _ config.Init) error {
			n++
			if after != c.after || root != layout.NewRootDir {
				t.Errorf("confirmer for %s after %s", root, after)
			}
			return nil
		}
		b.startConfirmer()
		if n != c.want {
			t.Errorf("trial %v confirm_after %s: %d confirmers started, want %d", c.trial, c.after, n, c.want)
		}
	}
}

// The watchdog keeper starts only for a trial boot with trial_watchdog set
// on a machine with /dev/watchdog, which the init opens and hands over.
func TestWatchdogOnlyForTrials(t *testing.T) {
	for _, c := range []struct {
		trial, device bool
		after         time.Duration
		want          int
	}{{true, true, 30 * time.Second, 1}, {true, true, 0, 0}, {false, true, 30 * time.Second, 0}, {true, false, 30 * time.Second, 0}} {
		root := t.TempDir()
		if c.device {
			os.MkdirAll(filepath.Join(root, "dev"), 0o755)
			os.WriteFile(filepath.Join(root, "dev/watchdog"), nil, 0o600)
		}
		var warned []string
		b := &Boot{Root: root, Logf: t.Logf, Warnf: func(f string, a ...any) { warned = append(warned, fmt.Sprintf(f, a...)) }}
		b.cfg.TrialWatchdog = config.OffDuration(c.after)
		b.state.Slot = &layout.SlotState{Slot: "b"}
		if c.trial {
			b.state.Slot.Trial = &layout.Trial{Left: 1}
		}
		n := 0
		b.StartWatchdog = func(newRoot string, after time.Duration, wd *os.File) error {
			n++
			if after != c.after || newRoot != filepath.Join(root, layout.NewRootDir) || wd == nil || wd.Name() != filepath.Join(root, "dev/watchdog") {
				t.Errorf("keeper for %s after %s with %v", newRoot, after, wd)
			}
			return nil
		}
		b.startWatchdog()
		if n != c.want {
			t.Errorf("trial %v device %v trial_watchdog %s: %d keepers started, want %d", c.trial, c.device, c.after, n, c.want)
		}
		if c.trial && c.after > 0 && !c.device && (len(warned) != 1 || !strings.Contains(warned[0], "no /dev/watchdog")) {
			t.Errorf("no device: warnings %q", warned)
		}
	}
}

// espDirMounter stands in for the boot partition: the test put its files
// at ESPMountDir already, so a mount only records the call.
type espDirMounter struct{ calls []string }

func (m *espDirMounter) MountESP(dev, dir string, rw bool) error {
	m.calls = append(m.calls, fmt.Sprintf("mount %s rw=%v", dev, rw))
	return nil
}
func (m *espDirMounter) Unmount(dir string) error { m.calls = append(m.calls, "unmount"); return nil }

// slotSysfs writes /sys/class/block for slotDisk's partitions (what
// slot.System reads to find the boot partition) and the boot entries.
func slotSysfs(t *testing.T, root string, entries map[string]slot.Entry) {
	t.Helper()
	mk := func(p string, data string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	class := filepath.Join(root, "sys/class/block")
	for i, label := range []string{"boot", "rootfs_a", "rootfs_b", "rootfs_data"} {
		name := fmt.Sprintf("vda%d", i+1)
		mk(filepath.Join(root, "sys/devices/pci0/block/vda", name, "uevent"), fmt.Sprintf("DEVNAME=%s\nDEVTYPE=partition\nPARTN=%d\nPARTNAME=%s\n", name, i+1, label))
		os.MkdirAll(class, 0o755)
		if err := os.Symlink("../../devices/pci0/block/vda/"+name, filepath.Join(class, name)); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(root, "sys/devices/pci0/block/vda/uevent"), "DEVNAME=vda\nDEVTYPE=disk\n")
	os.Symlink("../../devices/pci0/block/vda", filepath.Join(class, "vda"))
	for name, e := range entries {
		mk(filepath.Join(root, layout.ESPMountDir, layout.EntriesDir, name), e.Text())
	}
}

// A confirmed slot whose root fails its integrity check is given up for
// the other confirmed slot and the machine reboots; a trial boot, another
// failure, or no confirmed other slot changes nothing and returns (the
// rescue path).
func TestGiveUpSlot(t *testing.T) {
	const build = "00000000000000bb"
	entA := slot.Entry{Slot: layout.SlotA, Generation: 1, BuildID: "00000000000000aa", Loader: layout.LoaderUEFI}
	entB := slot.Entry{Slot: layout.SlotB, Generation: 2, BuildID: build, Loader: layout.LoaderUEFI}
	verityCmdline := "ovroot.slot=b ovroot.build=" + build + " ovroot.verity=sha256:3:00ff:" + strings.Repeat("ab", 32)
	bad := errors.New("data block 2 does not match the hash tree")
	for _, tc := range []struct {
		name        string
		cmdline     string
		bootCount   string
		verityErr   error
		mountErr    error
		entries     map[string]slot.Entry
		wantEntries []string
		wantReboot  bool
		wantWarn    string
	}{
		{name: "confirmed slot, confirmed other", cmdline: verityCmdline, verityErr: bad,
			entries:     map[string]slot.Entry{"ovroot-a.conf": entA, "ovroot-b.conf": entB},
			wantEntries: []string{"ovroot-a.conf", "ovroot-b+0-1.conf"}, wantReboot: true,
			wantWarn: "slot b (build 00000000000000bb) is damaged: given up (ovroot-b.conf is now ovroot-b+0-1.conf); rebooting into slot a"},
		{name: "the other slot on trial", cmdline: verityCmdline, verityErr: bad,
			entries:     map[string]slot.Entry{"ovroot-a+1-1.conf": entA, "ovroot-b.conf": entB},
			wantEntries: []string{"ovroot-a+1-1.conf", "ovroot-b.conf"},
			wantWarn:    "cannot give up the damaged slot b for slot a: slot a: no confirmed slot to fall back to"},
		{name: "a trial boot", cmdline: verityCmdline, verityErr: bad, bootCount: `\loader\entries\ovroot-b+0-3.conf`,
			entries:     map[string]slot.Entry{"ovroot-a.conf": entA, "ovroot-b+0-3.conf": entB},
			wantEntries: []string{"ovroot-a.conf", "ovroot-b+0-3.conf"}},
		{name: "another failure", cmdline: "ovroot.slot=b ovroot.build=" + build, mountErr: unix.EINVAL,
			entries:     map[string]slot.Entry{"ovroot-a.conf": entA, "ovroot-b.conf": entB},
			wantEntries: []string{"ovroot-a.conf", "ovroot-b.conf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := &fakeSys{devs: slotDisk(), probe: map[string]Content{"/dev/vda4": ContentExt4}, verityErr: tc.verityErr}
			if tc.mountErr != nil {
				sys.mountErr = map[string]error{layout.RomDir: tc.mountErr}
			}
			e := &bootEnv{cmdline: tc.cmdline, sys: sys, setup: func(root string) {
				withBootCount(tc.bootCount)(root)
				slotSysfs(t, root, tc.entries)
			}}
			b, err := e.run(t)
			if err == nil {
				t.Fatal("the boot did not fail")
			}
			m := &espDirMounter{}
			b.ESPMounter = m
			rebooted := 0
			b.Reboot = func() error { rebooted++; return nil }
			b.GiveUpSlot(err)
			if (rebooted == 1) != tc.wantReboot || rebooted > 1 {
				t.Errorf("rebooted %d times, want a reboot: %v", rebooted, tc.wantReboot)
			}
			ents, _ := os.ReadDir(filepath.Join(e.root, layout.ESPMountDir, layout.EntriesDir))
			var got []string
			for _, d := range ents {
				got = append(got, d.Name())
			}
			if !slices.Equal(got, tc.wantEntries) {
				t.Errorf("entries %v, want %v", got, tc.wantEntries)
			}
			if tc.wantWarn != "" && !e.warned(tc.wantWarn) {
				t.Errorf("no warning %q in %q", tc.wantWarn, e.warnings)
			}
			events, _ := slot.ReadEvents(filepath.Join(e.root, layout.Meta(layout.OverlayDir, layout.SlotLogFile)))
			if tc.wantWarn != "" && (len(events) != 1 || events[0].Event != slot.EventGivenUp || !strings.Contains(events[0].Reason, "root integrity failure on rootfs_b: data block 2")) {
				t.Errorf("slot log %+v", events)
			}
			if tc.wantWarn == "" && len(m.calls)+len(events) > 0 {
				t.Errorf("touched the boot partition %v or the slot log %+v", m.calls, events)
			}
		})
	}
}
