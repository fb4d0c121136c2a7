package boot

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
	"golang.org/x/sys/unix"
)

// usedData is a data filesystem after some use: changes in the upper.
func usedData(t *testing.T, root string) {
	for p, c := range map[string]string{
		"overlay/upper/etc/dropbear/key": "kept",
		"overlay/upper/root/.ssh/id":     "hidden, must go",
		"overlay/upper/etc/passwd":       "changed",
	} {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(root, "overlay/work/work"), 0o755)
}

func upperList(t *testing.T, root string) string {
	var out []string
	filepath.Walk(filepath.Join(root, "overlay/upper"), func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(filepath.Join(root, "overlay/upper"), p)
		out = append(out, rel)
		return nil
	})
	return strings.Join(out, " ")
}

func TestBootFactoryReset(t *testing.T) {
	ext4Disk := func() *fakeSys {
		return &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}}
	}
	for _, tc := range []struct {
		name        string
		cmdline     string
		config      string
		sys         *fakeSys
		request     string // trigger of a request ovrootctl left; "" = none
		dataMissing bool
		wantTrigger string // "" = no reset
		wantUpper   string
		wantCalls   []string
		wantWarned  []string
	}{
		{
			name: "no trigger: the upper is kept", sys: ext4Disk(),
			wantUpper: ". etc etc/dropbear etc/dropbear/key etc/passwd root root/.ssh root/.ssh/id",
			wantCalls: []string{"switch_root"},
		},
		{
			name: "request from ovrootctl", sys: ext4Disk(), request: reset.TriggerCtl,
			wantTrigger: reset.TriggerCtl, wantUpper: ".",
			wantCalls:  []string{"mount /dev/vda3 /overlay", "mount overlay /newroot", "collect-trash overlay/.ovroot/trash", "mount /rom /newroot/rom", "switch_root"},
			wantWarned: []string{"factory reset (trigger=ovrootctl): starting", "factory reset (trigger=ovrootctl, kept 0 paths) in"},
		},
		{
			name: "kernel command line, with a keep-list", sys: ext4Disk(), cmdline: "ovroot.reset=1",
			config:      "[reset]\nkeep = [\"/etc/dropbear\", \"/etc/absent\"]\n",
			wantTrigger: reset.TriggerCmdline, wantUpper: ". etc etc/dropbear etc/dropbear/key",
			wantWarned: []string{"factory reset (trigger=cmdline, kept 1 paths)"},
		},
		{
			name: "button held", sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, keyHeld: true},
			config:      "[reset]\nbutton_window = \"3s\"\nbutton_hold = \"1s\"\nbutton_key = \"KEY_F12\"\n",
			wantTrigger: reset.TriggerButton, wantUpper: ".",
			wantCalls:  []string{"wait-key \"\" 88 1s 3s", "mount /dev/vda2 /rom", "switch_root"},
			wantWarned: []string{"reset button held", "factory reset (trigger=button, kept 0 paths)"},
		},
		{
			name: "button not held", sys: ext4Disk(),
			config:    "[reset]\nbutton_window = \"3s\"\n",
			wantUpper: ". etc etc/dropbear etc/dropbear/key etc/passwd root root/.ssh root/.ssh/id",
			wantCalls: []string{"wait-key \"\" 408 2s 3s", "switch_root"},
		},
		{
			name: "reset asked for while the data partition is missing", cmdline: "ovroot.reset",
			sys:         &fakeSys{devs: standardDisk()[:3]},
			dataMissing: true,
			wantWarned:  []string{"factory reset (trigger=cmdline) not stored: the data partition is not in use"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &bootEnv{cmdline: tc.cmdline, config: tc.config, sys: tc.sys, setup: func(root string) {
				usedDataWithRequest(t, root, tc.request)
			}}
			b, err := e.run(t)
			if err != nil {
				t.Fatal(err)
			}
			st := b.State()
			if tc.wantTrigger == "" && st.Reset != nil || tc.wantTrigger != "" && (st.Reset == nil || st.Reset.Trigger != tc.wantTrigger) {
				t.Errorf("state reset = %+v, want trigger %q", st.Reset, tc.wantTrigger)
			}
			if !tc.dataMissing {
				if got := upperList(t, e.root); got != tc.wantUpper {
					t.Errorf("upper = %q, want %q", got, tc.wantUpper)
				}
				if p, _ := reset.Pending(filepath.Join(e.root, "overlay")); p != nil {
					t.Errorf("request still pending: %+v", p)
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
			for _, w := range tc.wantWarned {
				if !e.warned(w) {
					t.Errorf("no warning containing %q; warnings:\n%s", w, strings.Join(e.warnings, "\n"))
				}
			}
		})
	}
}

// A reset that cannot be recorded or performed leaves the device booting,
// volatile, and says why; the data is not touched.
func TestBootFactoryResetFailureGoesVolatile(t *testing.T) {
	e := &bootEnv{cmdline: "ovroot.reset=1", sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
		setup: func(root string) {
			usedData(t, root)
			// .ovroot is a file: the request cannot be stored.
			os.WriteFile(filepath.Join(root, "overlay", layout.MetaDir), []byte("in the way"), 0o644)
		}}
	b, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if b.State().Mode != layout.ModeVolatile || !strings.Contains(b.State().Reason, "factory reset (trigger=cmdline): record the request") {
		t.Errorf("state = %+v", b.State())
	}
	if !strings.Contains(strings.Join(e.sys.calls, "\n"), "umount /overlay") {
		t.Errorf("data partition not unmounted before going volatile: %v", e.sys.calls)
	}
}

// A full data partition: the reserve is released so the overlay can mount
// read-write, and said; with room again it is put back.
func TestBootDataFull(t *testing.T) {
	reserve := func(root string) string { return filepath.Join(root, "overlay", layout.MetaDir, "reserve") }
	e := &bootEnv{sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}}}
	if _, err := e.run(t); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(reserve(e.root)); err != nil || fi.Size() != layout.ReserveBytes {
		t.Fatalf("reserve not created: %v", err)
	}
	full := &bootEnv{sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, free: 4096},
		setup: func(root string) {
			os.MkdirAll(filepath.Dir(reserve(root)), 0o700)
			os.WriteFile(reserve(root), make([]byte, layout.ReserveBytes), 0o600)
		}}
	b, err := full.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(reserve(full.root)); err == nil {
		t.Error("reserve kept on a full partition")
	}
	if b.State().Mode != layout.ModePersistent || !full.warned("data partition full: released the 1024 KiB reserve") {
		t.Errorf("mode %s, warnings %v", b.State().Mode, full.warnings)
	}
	if !strings.Contains(strings.Join(b.State().Warnings, "\n"), "data partition full") {
		t.Errorf("state warnings %v", b.State().Warnings)
	}
}

// A pending reset on a data partition too full for it (no reserve left):
// the boot stays persistent, says the reset is postponed and why, and keeps
// the request, so the person can delete files or withdraw it; going
// volatile would lock them out of both.
func TestBootFactoryResetNoRoom(t *testing.T) {
	testenv.RequireRoot(t, "mounts a small tmpfs as the data partition")
	e := &bootEnv{sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, free: 4096},
		config: "[reset]\nkeep = [\"/etc/dropbear\"]\n",
		setup: func(root string) {
			data := filepath.Join(root, "overlay")
			os.MkdirAll(data, 0o755)
			if err := unix.Mount("tmpfs", data, "tmpfs", 0, "size=1m"); err != nil {
				testenv.Missing(t, "cannot mount a tmpfs here: "+err.Error())
			}
			t.Cleanup(func() { unix.Unmount(data, unix.MNT_DETACH) })
			usedData(t, root)
			if err := reset.Schedule(data, reset.TriggerCtl, time.Unix(5, 0)); err != nil {
				t.Fatal(err)
			}
			f, _ := os.Create(filepath.Join(data, "upper/big"))
			for _, err := f.Write(make([]byte, 4096)); err == nil; _, err = f.Write(make([]byte, 4096)) {
			}
			f.Close()
		}}
	b, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	if st := b.State(); st.Mode != layout.ModePersistent || st.Reset != nil {
		t.Errorf("state = %+v, want persistent without a reset", st)
	}
	if !e.warned("factory reset (trigger=ovrootctl) postponed: no room on the data partition") || !e.warned("ovrootctl factory-reset --cancel") {
		t.Errorf("warnings = %q", e.warnings)
	}
	if p, _ := reset.Pending(filepath.Join(e.root, "overlay")); p == nil {
		t.Error("the request was dropped")
	}
	if got := upperList(t, e.root); !strings.Contains(got, "root/.ssh/id") {
		t.Errorf("upper = %q, want it untouched", got)
	}
}

// Failsafe mode changes nothing on the data partition: a pending reset
// stays pending (it runs on the next normal boot), and one asked for on
// this boot's command line is not even recorded.
func TestBootFailsafeDoesNotReset(t *testing.T) {
	const untouched = ". etc etc/dropbear etc/dropbear/key etc/passwd root root/.ssh root/.ssh/id"
	for _, tc := range []struct {
		name, cmdline, request string
		wantPending            string // trigger of the request after the boot; "" = none
		wantWarned             string
	}{
		{name: "request from ovrootctl stays pending", cmdline: "ovroot.failsafe=1", request: reset.TriggerCtl, wantPending: reset.TriggerCtl},
		{name: "ovroot.reset with ovroot.failsafe is not stored", cmdline: "ovroot.failsafe=1 ovroot.reset=1",
			wantWarned: "factory reset (trigger=cmdline) not stored: the data partition is not in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &bootEnv{cmdline: tc.cmdline, config: "[reset]\nkeep = [\"/etc/dropbear\"]\n",
				sys:   &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
				setup: func(root string) { usedDataWithRequest(t, root, tc.request) }}
			b, err := e.run(t)
			if err != nil {
				t.Fatal(err)
			}
			if st := b.State(); st.Mode != layout.ModeFailsafe || st.Reset != nil {
				t.Errorf("state = %+v, want failsafe without a reset", st)
			}
			if got := upperList(t, e.root); got != untouched {
				t.Errorf("upper = %q, want it untouched: %q", got, untouched)
			}
			data := filepath.Join(e.root, "overlay")
			p, _ := reset.Pending(data)
			if tc.wantPending == "" && p != nil || tc.wantPending != "" && (p == nil || p.Trigger != tc.wantPending) {
				t.Errorf("pending request = %+v, want trigger %q", p, tc.wantPending)
			}
			if last, _ := reset.Last(data); last != nil {
				t.Errorf("a reset was recorded: %+v", last)
			}
			if n := reset.TrashCount(data); n != 0 {
				t.Errorf("%d trees in the trash", n)
			}
			if tc.wantWarned != "" && !e.warned(tc.wantWarned) {
				t.Errorf("no warning containing %q; warnings:\n%s", tc.wantWarned, strings.Join(e.warnings, "\n"))
			}
			if e.warned("factory reset (trigger=" + tc.request + "): starting") {
				t.Error("a factory reset started in failsafe mode")
			}
		})
	}
}

// ovroot.reset_step_delay slows every step of a reset by sleeping before
// it (the power-cut tests aim at the steps with it); without it, the reset
// sleeps not at all. Sleeps are counted on the fake clock, not timed.
func TestBootResetStepDelay(t *testing.T) {
	for _, tc := range []struct {
		cmdline   string
		minSleeps int // of the delay; the reset has at least 8 steps that change the disk
	}{
		{cmdline: "ovroot.reset=1 ovroot.reset_step_delay=300ms", minSleeps: 8},
		{cmdline: "ovroot.reset=1"},
	} {
		t.Run(tc.cmdline, func(t *testing.T) {
			e := &bootEnv{cmdline: tc.cmdline, config: "[reset]\nkeep = [\"/etc/dropbear\"]\n",
				sys:   &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}},
				setup: func(root string) { usedData(t, root) }}
			b, err := e.run(t)
			if err != nil {
				t.Fatal(err)
			}
			if st := b.State(); st.Reset == nil || st.Reset.Trigger != reset.TriggerCmdline {
				t.Fatalf("state reset = %+v, want a reset by cmdline", st.Reset)
			}
			delays := 0
			for _, d := range e.sleeps {
				if d == 300*time.Millisecond {
					delays++
				}
			}
			if tc.minSleeps == 0 && delays != 0 || delays < tc.minSleeps {
				t.Errorf("%d sleeps of 300ms (all sleeps: %v), want %d or more, and none without the parameter", delays, e.sleeps, tc.minSleeps)
			}
		})
	}
}

// usedDataWithRequest is usedData with a pending reset request by trigger
// ("" = none) on the data filesystem.
func usedDataWithRequest(t *testing.T, root, trigger string) {
	t.Helper()
	usedData(t, root)
	if trigger != "" {
		if err := reset.Schedule(filepath.Join(root, "overlay"), trigger, time.Unix(5, 0)); err != nil {
			t.Fatal(err)
		}
	}
}

// A restore ovrootctl staged is performed like a reset, and logged as a
// restore; a staged backup found cut short at boot leaves the upper as it
// was, drops the request and boots persistent, saying so loudly.
func TestBootRestore(t *testing.T) {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "etc/hostname", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5})
	tw.Write([]byte("mine\n"))
	tw.WriteHeader(&tar.Header{Name: "etc/.wh.motd", Typeflag: tar.TypeReg, Mode: 0o600})
	tw.Close()
	for _, tc := range []struct {
		name       string
		cut        bool
		wantUpper  string
		wantWarned []string
	}{
		{"restored", false, ". etc etc/hostname etc/motd", []string{"restore (trigger=restore): starting", "restore of a backup (trigger=restore) in"}},
		{"cut short on the flash", true, ". etc etc/dropbear etc/dropbear/key etc/passwd root root/.ssh root/.ssh/id", []string{"restore (trigger=restore): starting", "RESTORE FAILED, nothing changed", "the request was dropped"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &bootEnv{sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}}, setup: func(root string) {
				usedData(t, root)
				data := filepath.Join(root, "overlay")
				if _, err := reset.ScheduleRestore(data, bytes.NewReader(layer.Bytes()), time.Unix(5, 0)); err != nil {
					t.Fatal(err)
				}
				if tc.cut {
					os.Truncate(layout.Meta(data, layout.RestoreFile), 700)
				}
			}}
			b, err := e.run(t)
			if err != nil {
				t.Fatal(err)
			}
			st := b.State()
			if st.Mode != layout.ModePersistent || st.Reset == nil || st.Reset.Trigger != reset.TriggerRestore || st.Reset.Restored == tc.cut || (st.Reset.Failed != "") != tc.cut {
				t.Errorf("state mode %s, reset %+v", st.Mode, st.Reset)
			}
			if got := upperList(t, e.root); got != tc.wantUpper {
				t.Errorf("upper = %q, want %q", got, tc.wantUpper)
			}
			if p, _ := reset.Pending(filepath.Join(e.root, "overlay")); p != nil {
				t.Errorf("request still pending: %+v", p)
			}
			for _, w := range tc.wantWarned {
				if !e.warned(w) {
					t.Errorf("no warning containing %q; warnings:\n%s", w, strings.Join(e.warnings, "\n"))
				}
			}
		})
	}
}
