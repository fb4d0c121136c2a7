package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/verity"
	"golang.org/x/sys/unix"
)

// fakeSys records every privileged call in order and answers from its fields.
type fakeSys struct {
	calls     []string
	devs      []BlockDev
	devsAfter int // BlockDevices returns nothing for this many calls
	probe     map[string]Content
	mountErr  map[string]error // by target
	moduleErr map[string]error // by path suffix
	formatErr error
	switchErr error
	listCalls int
	keyHeld   bool
	mountFail map[string]int // by target: fail this many times with EUCLEAN, then succeed
	repairErr error
	undoErr   error           // what UndoFsck(apply) returns
	console   string          // what ReadConsoleLine returns
	free      int64           // what FreeBytes returns; 0 = plenty
	panicIn   string          // a method that panics, as third-party code on bad data might
	disks     map[string]Disk // OpenDisk's answers; absent = an error
	fsGrow    [2]int64        // GrowFS's from, to; zero = nothing to do
	// journalPending: ReplayJournal replays, and the mount works after it.
	journalPending bool
	verityErr      error // what OpenVerity returns
	// mountSrcErr: a Mount of this source fails with this error.
	mountSrcErr map[string]error
	// devsAfterReread is what BlockDevices lists once the kernel re-read
	// the memDisk at disks["vda"] (nil = devs).
	devsAfterReread []BlockDev
	// onMount runs after a Mount is recorded, as the kernel's mount
	// makes a filesystem's files appear (efivarfs's variables).
	onMount func(source, target, fstype string)
	// squashfsBytes is what SquashfsBytes returns (0: an error); mapErr
	// fails MapLayer for a layer.
	squashfsBytes int64
	mapErr        map[string]error
	mu            sync.Mutex
}

func (f *fakeSys) rec(format string, args ...any) {
	f.mu.Lock() // modules load from several goroutines
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeSys) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.rec("mount %s %s %s %#x %s", source, target, fstype, flags, data)
	if f.onMount != nil {
		f.onMount(source, target, fstype)
	}
	if f.mountFail[target] > 0 {
		f.mountFail[target]--
		return unix.EUCLEAN
	}
	if err := f.mountSrcErr[source]; err != nil {
		return err
	}
	return f.mountErr[target]
}
func (f *fakeSys) Unmount(target string) error { f.rec("umount %s", target); return nil }
func (f *fakeSys) LoadModule(path string) error {
	f.rec("load %s", filepath.Base(path))
	for suffix, err := range f.moduleErr {
		if strings.HasSuffix(path, suffix) {
			return err
		}
	}
	return nil
}
func (f *fakeSys) BlockDevices() ([]BlockDev, error) {
	if f.panicIn == "BlockDevices" {
		panic("fake panic in BlockDevices")
	}
	f.listCalls++
	if f.listCalls <= f.devsAfter {
		return nil, nil
	}
	if m, ok := f.disks["vda"].(*memDisk); ok && m.reread > 0 && f.devsAfterReread != nil {
		return f.devsAfterReread, nil
	}
	return f.devs, nil
}
func (f *fakeSys) Probe(dev string) (Content, error) {
	if c, ok := f.probe[dev]; ok {
		return c, nil
	}
	return ContentUnknown, errors.New("no such device")
}
func (f *fakeSys) Format(dev, fstype, label string, size int64) error {
	f.rec("format %s %s %s %d", dev, fstype, label, size)
	if f.panicIn == "Format" {
		var sb *struct{ magic uint16 }
		_ = sb.magic // a nil dereference, as a formatter might make
	}
	return f.formatErr
}
func (f *fakeSys) WaitForKey(device string, code int, hold, window time.Duration) (bool, error) {
	f.rec("wait-key %q %d %s %s", device, code, hold, window)
	return f.keyHeld, nil
}
func (f *fakeSys) StartTrashCollector(trash string) error {
	f.rec("collect-trash %s", filepath.Base(filepath.Dir(filepath.Dir(trash)))+"/"+filepath.Base(filepath.Dir(trash))+"/"+filepath.Base(trash))
	return nil
}
func (f *fakeSys) Repair(dev, fstype string) (string, error) {
	f.rec("repair %s %s", dev, fstype)
	return "rootfs_data: 11/16384 files (0.0% non-contiguous)\n", f.repairErr
}
func (f *fakeSys) UndoFsck(dev string, apply bool) (string, error) {
	f.rec("undo-fsck %s apply=%v", dev, apply)
	if apply {
		return "wrote back 4096 bytes", f.undoErr
	}
	return "", nil
}
func (f *fakeSys) FreeBytes(path string) (int64, error) {
	if f.free == 0 {
		return 1 << 30, nil
	}
	return f.free, nil
}
func (f *fakeSys) CanWrite(dir string, n int64) (bool, error) {
	f.rec("can-write %d", n)
	return f.free == 0 || f.free > n, nil
}
func (f *fakeSys) ReadConsoleLine(timeout time.Duration) (string, error) {
	f.rec("read-console %s", timeout)
	return f.console, nil
}
func (f *fakeSys) OpenDisk(name string) (Disk, error) {
	f.rec("open-disk %s", name)
	if d, ok := f.disks[name]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("open /dev/%s: %w", name, os.ErrNotExist)
}
func (f *fakeSys) ReplayJournal(dev string) (string, error) {
	f.rec("replay-journal %s", dev)
	if !f.journalPending {
		return "", errNoRecovery
	}
	f.mountFail = nil
	return "rootfs_data: recovering journal\n", nil
}
func (f *fakeSys) GrowFS(dev, mountpoint string) (int64, int64, error) {
	f.rec("growfs %s %s", dev, mountpoint)
	return f.fsGrow[0], f.fsGrow[1], nil
}
func (f *fakeSys) OpenVerity(dev string, v verity.Info) (string, error) {
	f.rec("verity %s %x", dev, v.RootHash)
	if f.verityErr != nil {
		return "", f.verityErr
	}
	return "/dev/dm-0", nil
}

func (f *fakeSys) SwitchRoot(newRoot, init string) error {
	f.rec("switch_root %s %s", newRoot, init)
	return f.switchErr
}

func standardDisk() []BlockDev {
	return []BlockDev{disk("vda", 0), part("vda", 1, "boot", 0), part("vda", 2, "rootfs", 0), part("vda", 3, "rootfs_data", 0)}
}

type bootEnv struct {
	root     string
	cmdline  string
	config   string // init.toml content; "" = no file
	modules  []string
	sys      *fakeSys
	warnings []string
	sleeps   []time.Duration   // every Sleep of the boot, in order
	setup    func(root string) // prepares files (the data fs at root/overlay)
	traces   []string          // every Tracef line, in order
}

// run sets up a fake initramfs in a temp dir and runs the boot sequence with
// a fake clock that advances only when the sequence sleeps.
func (e *bootEnv) run(t *testing.T) (*Boot, error) {
	t.Helper()
	e.root = t.TempDir()
	write := func(p, content string) {
		t.Helper()
		full := filepath.Join(e.root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("/proc/cmdline", e.cmdline+"\n")
	if e.config != "" {
		write(layout.InitConfigPath, e.config)
	}
	if e.modules != nil {
		write(layout.ModuleLoadList, strings.Join(e.modules, "\n")+"\n")
	}
	if e.setup != nil {
		e.setup(e.root)
	}
	clock := time.Unix(1000, 0)
	b := &Boot{
		Sys:  e.sys,
		Root: e.root,
		Logf: t.Logf,
		Warnf: func(format string, args ...any) {
			e.warnings = append(e.warnings, fmt.Sprintf(format, args...))
			t.Logf("WARN "+format, args...)
		},
		Now:   func() time.Time { return clock },
		Sleep: func(d time.Duration) { e.sleeps = append(e.sleeps, d); clock = clock.Add(d) },
		Tracef: func(format string, args ...any) {
			e.traces = append(e.traces, fmt.Sprintf(format, args...))
		},
	}
	return b, b.Attempt()
}

func (e *bootEnv) warned(substr string) bool {
	for _, w := range e.warnings {
		if strings.Contains(w, substr) {
			return true
		}
	}
	return false
}

const overlayOpts = "lowerdir=/rom,upperdir=/overlay/upper,workdir=/overlay/work"

func TestBootFirstBootFormatsBlankData(t *testing.T) {
	e := &bootEnv{
		cmdline: "console=ttyS0",
		modules: []string{"/lib/modules/6.1/kernel/virtio.ko", "/lib/modules/6.1/kernel/virtio_blk.ko deps=virtio"},
		sys:     &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentBlank}},
	}
	b, err := e.run(t)
	if err != nil {
		t.Fatalf("Run() = %v, want nil (switch_root succeeded)", err)
	}
	want := []string{
		fmt.Sprintf("mount proc /proc proc %#x ", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC),
		fmt.Sprintf("mount sysfs /sys sysfs %#x ", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC),
		fmt.Sprintf("mount devtmpfs /dev devtmpfs %#x mode=0755", unix.MS_NOSUID),
		fmt.Sprintf("mount tmpfs /run tmpfs %#x mode=0755", unix.MS_NOSUID|unix.MS_NODEV),
		"load virtio.ko",
		"load virtio_blk.ko",
		"open-disk vda", // the GPT and the data partition to the disk's size
		fmt.Sprintf("mount /dev/vda2 /rom squashfs %#x ", unix.MS_RDONLY),
		"format /dev/vda3 ext4 rootfs_data 0", // the whole partition
		fmt.Sprintf("mount /dev/vda3 /overlay ext4 %#x ", unix.MS_NOATIME),
		"growfs /dev/vda3 /overlay", // the data filesystem to its partition's size
		"mount overlay /newroot overlay 0x0 " + overlayOpts,
		fmt.Sprintf("mount /rom /newroot/rom  %#x ", unix.MS_MOVE),
		fmt.Sprintf("mount /overlay /newroot/overlay  %#x ", unix.MS_MOVE),
		"switch_root /newroot /sbin/init",
	}
	if !reflect.DeepEqual(e.sys.calls, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(e.sys.calls, "\n"), strings.Join(want, "\n"))
	}
	st := b.State()
	if st.Mode != layout.ModePersistent || !st.Formatted || st.RootDevice != "/dev/vda2" || st.DataDevice != "/dev/vda3" {
		t.Errorf("state = %+v, want persistent, formatted, vda2/vda3", st)
	}
	data, err := os.ReadFile(filepath.Join(e.root, layout.StateFile))
	if err != nil {
		t.Fatalf("state file not written: %v", err)
	}
	if got, err := layout.ParseState(data); err != nil || got.Mode != layout.ModePersistent {
		t.Errorf("state file = %+v, %v; want mode persistent", got, err)
	}
	for _, d := range []string{"overlay/upper", "overlay/work", "newroot"} {
		if fi, err := os.Stat(filepath.Join(e.root, d)); err != nil || !fi.IsDir() {
			t.Errorf("directory %s not created: %v", d, err)
		}
	}
}

func TestBootDecisions(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cmdline    string
		config     string
		sys        *fakeSys
		wantErr    string      // "" = Run succeeds
		wantMode   layout.Mode // state mode
		wantCalls  []string    // each must appear, in this order
		notCalls   []string    // none may appear
		wantWarned []string
		notWarned  []string
	}{
		{
			name:      "verity: the root is checked, then mounted through the mapping",
			cmdline:   "ovroot.verity=sha256:3:00ff:abababababababababababababababababababababababababababababababab",
			sys:       &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
			wantMode:  layout.ModePersistent,
			wantCalls: []string{"verity /dev/vda2 abababababababababababababababababababababababababababababababab", fmt.Sprintf("mount /dev/dm-0 /rom squashfs %#x ", unix.MS_RDONLY)},
			notCalls:  []string{fmt.Sprintf("mount /dev/vda2 /rom squashfs %#x ", unix.MS_RDONLY)},
		},
		{
			name:       "verity: a block that does not match stops the boot, naming the partition",
			cmdline:    "ovroot.verity=sha256:3:00ff:abababababababababababababababababababababababababababababababab",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, verityErr: errors.New("data block 2 does not match the hash tree")},
			wantErr:    "root integrity failure on rootfs: data block 2 does not match",
			wantWarned: []string{"root integrity failure on rootfs: data block 2"},
			notCalls:   []string{fmt.Sprintf("mount /dev/vda2 /rom squashfs %#x ", unix.MS_RDONLY), "switch_root /newroot /sbin/init"},
		},
		{
			name:       "verity: a parameter that does not parse never mounts the root unchecked",
			cmdline:    "ovroot.verity=sha256:3:00ff:abcd",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
			wantErr:    "root integrity failure on rootfs: ovroot.verity=: root hash",
			wantWarned: []string{"not mounting a root that cannot be checked"},
			notCalls:   []string{fmt.Sprintf("mount /dev/vda2 /rom squashfs %#x ", unix.MS_RDONLY), "switch_root /newroot /sbin/init"},
		},
		{
			name:      "second boot mounts ext4 without formatting",
			sys:       &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
			wantMode:  layout.ModePersistent,
			wantCalls: []string{"mount /dev/vda3 /overlay ext4", "switch_root /newroot /sbin/init"},
			notCalls:  []string{"format"},
		},
		{
			name:       "data partition missing goes volatile",
			sys:        &fakeSys{devs: []BlockDev{disk("vda", 0), part("vda", 2, "rootfs", 0)}},
			wantMode:   layout.ModeVolatile,
			wantCalls:  []string{"mount tmpfs /overlay tmpfs", "mount overlay /newroot overlay 0x0 " + overlayOpts, "switch_root"},
			notCalls:   []string{"format"},
			wantWarned: []string{"VOLATILE: no partition labelled rootfs_data"},
		},
		{
			name:       "unknown content is never formatted",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentUnknown}},
			wantMode:   layout.ModeVolatile,
			wantCalls:  []string{"mount tmpfs /overlay tmpfs", "switch_root"},
			notCalls:   []string{"format", "mount /dev/vda3"},
			wantWarned: []string{"VOLATILE: data partition /dev/vda3 (PARTLABEL=rootfs_data) holds unknown content"},
		},
		{
			name:       "ext4 that does not mount and cannot be repaired goes volatile and is not formatted",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, mountErr: map[string]error{"/overlay": unix.EUCLEAN}, repairErr: errors.New("e2fsck exited 4")},
			wantMode:   layout.ModeVolatile,
			wantCalls:  []string{"mount /dev/vda3 /overlay ext4", "repair /dev/vda3 ext4", "undo-fsck /dev/vda3 apply=true", "mount tmpfs /overlay tmpfs", "switch_root"},
			notCalls:   []string{"format", "undo-fsck /dev/vda3 apply=false"},
			wantWarned: []string{"repair failed: e2fsck exited 4; rolled back: wrote back 4096 bytes", "VOLATILE: mount data /dev/vda3", "repair failed: e2fsck exited 4: leaving it untouched (on_corrupt = keep)"},
		},
		{
			name: "a failed repair whose rollback fails says the partition changed, never untouched",
			sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, mountErr: map[string]error{"/overlay": unix.EUCLEAN},
				repairErr: errors.New("e2fsck exited 4"), undoErr: errors.New("undo key 3: checksum 0x1, want 0x2")},
			wantMode:   layout.ModeVolatile,
			wantCalls:  []string{"repair /dev/vda3 ext4", "undo-fsck /dev/vda3 apply=true", "mount tmpfs /overlay tmpfs", "switch_root"},
			notCalls:   []string{"format"},
			wantWarned: []string{"the failed repair CHANGED data partition /dev/vda3 (PARTLABEL=rootfs_data) and undoing it failed: undo key 3", "repair failed: e2fsck exited 4: leaving it as it is now (on_corrupt = keep)"},
		},
		{
			name:       "a repair that e2fsck finished but the kernel still refuses is rolled back",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, mountFail: map[string]int{"/overlay": 2}},
			wantMode:   layout.ModeVolatile,
			wantCalls:  []string{"repair /dev/vda3 ext4", "mount /dev/vda3 /overlay ext4", "undo-fsck /dev/vda3 apply=true", "mount tmpfs /overlay tmpfs"},
			notCalls:   []string{"format", "undo-fsck /dev/vda3 apply=false"},
			wantWarned: []string{"e2fsck finished, but: mount data /dev/vda3", "leaving it untouched (on_corrupt = keep)"},
		},
		{
			name:       "ext4 that mounts after a repair stays persistent",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, mountFail: map[string]int{"/overlay": 1}},
			wantMode:   layout.ModePersistent,
			wantCalls:  []string{"mount /dev/vda3 /overlay ext4", "repair /dev/vda3 ext4", "mount /dev/vda3 /overlay ext4", "undo-fsck /dev/vda3 apply=false", "mount overlay /newroot", "switch_root"},
			notCalls:   []string{"format", "mount tmpfs /overlay", "undo-fsck /dev/vda3 apply=true"},
			wantWarned: []string{"repairing /dev/vda3 (ext4)", "repaired /dev/vda3 in"},
		},
		{
			name:       "ext4 with a wiped superblock is repaired, never formatted as blank",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4Damaged}},
			wantMode:   layout.ModePersistent,
			wantCalls:  []string{"repair /dev/vda3 ext4", "mount /dev/vda3 /overlay ext4", "switch_root"},
			notCalls:   []string{"format"},
			wantWarned: []string{"primary superblock damaged"},
		},
		{
			name:       "failsafe from the command line: RAM upper, data read-only, nothing formatted",
			cmdline:    "ovroot.failsafe=1",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
			wantMode:   layout.ModeFailsafe,
			wantCalls:  []string{fmt.Sprintf("mount /dev/vda3 /overlay ext4 %#x", unix.MS_RDONLY|unix.MS_NOATIME), "mount overlay /newroot overlay 0x0 lowerdir=/rom,upperdir=/run/ovroot/failsafe/upper,workdir=/run/ovroot/failsafe/work", "switch_root"},
			notCalls:   []string{"format", "repair", "read-console", fmt.Sprintf("mount /dev/vda3 /overlay ext4 %#x", unix.MS_NOATIME)},
			wantWarned: []string{"FAILSAFE: ovroot.failsafe on the kernel command line"},
		},
		{
			name:       "failsafe from the console key; a blank data partition is not formatted",
			config:     "failsafe_window = \"2s\"\n",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentBlank}, console: "f\n"},
			wantMode:   layout.ModeFailsafe,
			wantCalls:  []string{"read-console 2s", "mount overlay /newroot overlay 0x0 lowerdir=/rom,upperdir=/run/ovroot/failsafe/upper", "switch_root"},
			notCalls:   []string{"format", "mount /dev/vda3"},
			wantWarned: []string{"FAILSAFE: f pressed on the console", "failsafe: data partition /dev/vda3 (PARTLABEL=rootfs_data) not mounted (holds blank content"},
		},
		{
			name:      "another key on the console boots normally",
			config:    "failsafe_window = \"2s\"\n",
			sys:       &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, console: "x\n"},
			wantMode:  layout.ModePersistent,
			wantCalls: []string{"read-console 2s", "mount /dev/vda3 /overlay ext4", "switch_root"},
		},
		{
			name:       "on_corrupt = format formats what cannot be mounted or repaired",
			config:     "on_corrupt = \"format\"\n",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentUnknown}},
			wantMode:   layout.ModePersistent,
			wantCalls:  []string{"format /dev/vda3 ext4 rootfs_data", "mount /dev/vda3 /overlay ext4", "switch_root"},
			wantWarned: []string{"holds unknown content, not ext4: formatting it ext4 because on_corrupt = format"},
		},
		{
			name:       "format failure goes volatile",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentBlank}, formatErr: unix.EIO},
			wantMode:   layout.ModeVolatile,
			wantCalls:  []string{"format /dev/vda3", "mount tmpfs /overlay tmpfs", "switch_root"},
			wantWarned: []string{"VOLATILE: format /dev/vda3"},
		},
		{
			name:      "root missing is an error naming the label and the devices",
			sys:       &fakeSys{devs: []BlockDev{disk("sda", 0), part("sda", 1, "foo", 0)}},
			wantErr:   "no partition labelled rootfs after 15s; block devices: /dev/sda, /dev/sda1 (PARTLABEL=foo)",
			wantCalls: []string{"load"},
			notCalls:  []string{"mount /dev", "switch_root"},
		},
		{
			name:      "lower that does not mount is an error",
			sys:       &fakeSys{devs: standardDisk(), mountErr: map[string]error{"/rom": unix.EINVAL}},
			wantErr:   "mount lower /dev/vda2 (PARTLABEL=rootfs) on /rom: invalid argument",
			notCalls:  []string{"switch_root", "format"},
			wantCalls: []string{"mount /dev/vda2 /rom squashfs"},
		},
		{
			name:     "a root partition that holds no squashfs says what it holds",
			sys:      &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda2": ContentExt4}, mountErr: map[string]error{"/rom": unix.EINVAL}},
			wantErr:  "root partition /dev/vda2 (PARTLABEL=rootfs) holds ext4 content, not squashfs: not mounted (mount said: invalid argument)",
			notCalls: []string{"switch_root", "format", "mount /dev/vda3"},
		},
		{
			name:       "persistent overlay failure falls back to volatile",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, mountErr: map[string]error{"/newroot": unix.EINVAL}},
			wantErr:    "mount overlay",
			wantCalls:  []string{"mount overlay /newroot", "umount /overlay", "mount tmpfs /overlay tmpfs", "mount overlay /newroot"},
			wantWarned: []string{"VOLATILE: mount overlay"},
		},
		{
			name:      "init= on the command line wins over the config",
			cmdline:   "init=/bin/sh",
			config:    "init = \"/sbin/procd\"\n",
			sys:       &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
			wantMode:  layout.ModePersistent,
			wantCalls: []string{"switch_root /newroot /bin/sh"},
		},
		{
			name:      "config labels are used",
			config:    "root_label = \"sysroot\"\ndata_label = \"userdata\"\n",
			sys:       &fakeSys{devs: []BlockDev{disk("vda", 0), part("vda", 1, "sysroot", 0), part("vda", 2, "userdata", 0)}, probe: map[string]Content{"/dev/vda2": ContentExt4}},
			wantMode:  layout.ModePersistent,
			wantCalls: []string{"mount /dev/vda1 /rom", "mount /dev/vda2 /overlay ext4"},
		},
		{
			name:       "broken config boots with defaults and says where",
			config:     "root_label = \"rootfs\"\ndevice_timeout = \"soon\"\n",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
			wantMode:   layout.ModePersistent,
			wantCalls:  []string{"switch_root /newroot /sbin/init"},
			wantWarned: []string{"init.toml:2", "booting with defaults"},
		},
		{
			name:      "devices that appear late are waited for",
			sys:       &fakeSys{devs: standardDisk(), devsAfter: 40, probe: map[string]Content{"/dev/vda3": ContentExt4}},
			wantMode:  layout.ModePersistent,
			wantCalls: []string{"switch_root"},
		},
		{
			name:      "switch_root failure is returned and mounts undone",
			sys:       &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, switchErr: unix.ENOENT},
			wantErr:   "switch_root to /newroot, init /sbin/init",
			wantCalls: []string{"switch_root", "umount /newroot"},
		},
		{
			name:       "a module that fails to load does not stop the boot",
			sys:        &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, moduleErr: map[string]error{"crc32c_intel.ko": unix.ENOEXEC}},
			wantMode:   layout.ModePersistent,
			wantCalls:  []string{"load crc32c_intel.ko", "load ext4.ko", "switch_root"},
			wantWarned: []string{"load module /lib/modules/x/crc32c_intel.ko: exec format error", "loaded 1 modules, 1 failed"},
		},
		{
			name:      "a module for hardware that is not there is not a failure",
			sys:       &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, moduleErr: map[string]error{"crc32c_intel.ko": unix.ENODEV}},
			wantMode:  layout.ModePersistent,
			wantCalls: []string{"load crc32c_intel.ko", "load ext4.ko", "switch_root"},
			notWarned: []string{"crc32c", "failed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &bootEnv{cmdline: tc.cmdline, config: tc.config, sys: tc.sys,
				modules: []string{"/lib/modules/x/crc32c_intel.ko", "/lib/modules/x/ext4.ko after=crc32c_intel"}}
			b, err := e.run(t)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Run() = %v, want error containing %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Run() = %v, want nil", err)
			}
			if tc.wantMode != "" && b.State().Mode != tc.wantMode {
				t.Errorf("state mode = %q, want %q", b.State().Mode, tc.wantMode)
			}
			next := 0
			for _, c := range e.sys.calls {
				if next < len(tc.wantCalls) && strings.HasPrefix(c, tc.wantCalls[next]) {
					next++
				}
				for _, bad := range tc.notCalls {
					if strings.HasPrefix(c, bad) {
						t.Errorf("unexpected call %q", c)
					}
				}
			}
			if next < len(tc.wantCalls) {
				t.Errorf("call %q not made (in order); calls:\n%s", tc.wantCalls[next], strings.Join(e.sys.calls, "\n"))
			}
			for _, w := range tc.wantWarned {
				if !e.warned(w) {
					t.Errorf("no warning containing %q; warnings:\n%s", w, strings.Join(e.warnings, "\n"))
				}
			}
			for _, w := range tc.notWarned {
				if e.warned(w) {
					t.Errorf("a warning contains %q; warnings:\n%s", w, strings.Join(e.warnings, "\n"))
				}
			}
		})
	}
}

// A panic in a step that runs code on the data partition's content falls
// back as an error there would (volatile); a panic anywhere else ends the
// attempt with an error and undoes its mounts. Both are logged with their
// stack.
func TestBootPanicIsRecovered(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sys       *fakeSys
		wantErr   string // "" = the boot goes on
		wantMode  layout.Mode
		wantWarn  []string
		wantCalls []string
	}{
		{
			name:      "panic while formatting the data partition goes volatile",
			sys:       &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentBlank}, panicIn: "Format"},
			wantMode:  layout.ModeVolatile,
			wantWarn:  []string{"PANIC in mount the data partition: runtime error: invalid memory address or nil pointer dereference", "goroutine", "boot.(*fakeSys).Format", "VOLATILE: mount the data partition: panic: runtime error"},
			wantCalls: []string{"format /dev/vda3", "umount /overlay", "mount tmpfs /overlay tmpfs", "switch_root"},
		},
		{
			name:      "panic elsewhere ends the attempt with an error",
			sys:       &fakeSys{devs: standardDisk(), panicIn: "BlockDevices"},
			wantErr:   "boot attempt: panic: fake panic in BlockDevices",
			wantWarn:  []string{"PANIC in boot attempt: fake panic in BlockDevices", "boot.(*fakeSys).BlockDevices"},
			wantCalls: []string{"load ext4.ko", "umount /newroot"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &bootEnv{sys: tc.sys, modules: []string{"/lib/modules/x/ext4.ko"}}
			b, err := e.run(t)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Attempt() = %v, want error %q", err, tc.wantErr)
			}
			if tc.wantMode != "" && b.State().Mode != tc.wantMode {
				t.Errorf("mode = %q, want %q", b.State().Mode, tc.wantMode)
			}
			for _, w := range tc.wantWarn {
				if !e.warned(w) {
					t.Errorf("no warning containing %q; warnings:\n%s", w, strings.Join(e.warnings, "\n"))
				}
			}
			next := 0
			for _, c := range e.sys.calls {
				if next < len(tc.wantCalls) && strings.HasPrefix(c, tc.wantCalls[next]) {
					next++
				}
			}
			if next < len(tc.wantCalls) {
				t.Errorf("call %q not made (in order); calls:\n%s", tc.wantCalls[next], strings.Join(e.sys.calls, "\n"))
			}
		})
	}
}

func TestSlowest(t *testing.T) {
	took := []moduleTime{{"crc16", 2 * time.Millisecond}, {"ext4", 90 * time.Millisecond}, {"jbd2", 30 * time.Millisecond}, {"virtio", 40 * time.Millisecond}}
	if got, want := slowest(took, 3), "ext4 90 ms, virtio 40 ms, jbd2 30 ms"; got != want {
		t.Errorf("slowest = %q, want %q", got, want)
	}
	if got := slowest(nil, 3); got != "" {
		t.Errorf("slowest(nil) = %q, want empty", got)
	}
}

// The init's module step through the fake Sys: a module whose dependency
// failed is not tried and is reported with it, independent ones load, and
// a module for a CPU feature this CPU lacks is not tried and is no failure.
func TestLoadModulesGraph(t *testing.T) {
	sys := &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4},
		moduleErr: map[string]error{"jbd2.ko": unix.ENOEXEC}}
	e := &bootEnv{sys: sys, modules: []string{
		"/lib/modules/x/crc32c-intel.ko needs=cpu:type:x86,ven*fam*mod*:feature:*0094*",
		"/lib/modules/x/jbd2.ko after=crc32c_intel",
		"/lib/modules/x/squashfs.ko",
		"/lib/modules/x/ext4.ko deps=jbd2 after=crc32c_intel",
	}, setup: func(root string) {
		os.MkdirAll(filepath.Join(root, "sys/devices/system/cpu"), 0o755)
		os.WriteFile(filepath.Join(root, "sys/devices/system/cpu/modalias"), []byte("cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0001,0093\n"), 0o644)
	}}
	if _, err := e.run(t); err != nil {
		t.Fatal(err)
	}
	var loads []string
	for _, c := range sys.calls {
		if strings.HasPrefix(c, "load ") {
			loads = append(loads, c)
		}
	}
	sort.Strings(loads)
	if want := []string{"load jbd2.ko", "load squashfs.ko"}; !reflect.DeepEqual(loads, want) {
		t.Errorf("loads %q, want %q (no crc32c-intel: the CPU lacks SSE4.2; no ext4: jbd2 failed)", loads, want)
	}
	for _, w := range []string{
		"load module /lib/modules/x/jbd2.ko: exec format error",
		"module ext4.ko: not loaded: it needs jbd2, which did not load",
		"loaded 1 modules (1 for hardware not present), 2 failed",
	} {
		if !e.warned(w) {
			t.Errorf("no warning %q in %q", w, e.warnings)
		}
	}
	if e.warned("crc32c") {
		t.Errorf("crc32c-intel warned about: %q", e.warnings)
	}
}
func (f *fakeSys) SquashfsBytes(dev string) (int64, error) {
	f.rec("squashfs-bytes %s", dev)
	if f.squashfsBytes == 0 {
		return 0, errors.New("no squashfs superblock at byte 0")
	}
	return f.squashfsBytes, nil
}
func (f *fakeSys) UnmapLayer(name string) error {
	f.rec("unmap-layer %s", name)
	return nil
}
func (f *fakeSys) MapLayer(dev, name string, off, size int64) (string, error) {
	f.rec("map-layer %s %s %d %d", dev, name, off, size)
	if err := f.mapErr[name]; err != nil {
		return "", err
	}
	return "/dev/mapper/ovroot-layer-" + name, nil
}
