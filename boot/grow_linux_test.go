package boot

import (
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// indexOf is the position of the first call starting with prefix, or -1.
func indexOf(calls []string, prefix string) int {
	for i, c := range calls {
		if strings.HasPrefix(c, prefix) {
			return i
		}
	}
	return -1
}

// TestBootGrow runs the boot sequence on a disk four times the image: the
// GPT and the kernel's idea of the data partition are grown before any
// mount, the filesystem right after the data partition is mounted; with
// grow = false only the backup GPT moves; failsafe touches nothing.
func TestBootGrow(t *testing.T) {
	for _, tc := range []struct {
		name     string
		config   string
		cmdline  string
		wantGrow bool // partition 3 and the filesystem grown
		wantOpen bool // the disk opened at all
	}{
		{name: "grows by default", wantGrow: true, wantOpen: true},
		{name: "grow = false moves only the backup GPT", config: "grow = false\n", wantOpen: true},
		{name: "failsafe leaves the disk alone", cmdline: "ovroot.failsafe=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := imageDisk(t, 4*imageSize)
			sys := &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4},
				disks: map[string]Disk{"vda": m}, fsGrow: [2]int64{imageLayout[2][1], 4*imageSize - 10*mib}}
			e := &bootEnv{sys: sys, config: tc.config, cmdline: tc.cmdline}
			if _, err := e.run(t); err != nil {
				t.Fatal(err)
			}
			open, rom := indexOf(sys.calls, "open-disk vda"), indexOf(sys.calls, "mount /dev/vda2 /rom")
			growfs, data := indexOf(sys.calls, "growfs /dev/vda3 /overlay"), indexOf(sys.calls, "mount /dev/vda3 /overlay")
			if (open >= 0) != tc.wantOpen || open > rom {
				t.Errorf("open-disk at call %d, mount of /rom at %d; want the disk opened (%v) before any mount", open, rom, tc.wantOpen)
			}
			if (growfs >= 0) != tc.wantGrow || (tc.wantGrow && growfs < data) {
				t.Errorf("growfs at call %d, data mount at %d; want growfs %v after the mount:\n%s", growfs, data, tc.wantGrow, strings.Join(sys.calls, "\n"))
			}
			grown := m.kernel[3] == int64(wantEnd(4*imageSize)+1)*512-imageLayout[2][0]
			if grown != tc.wantGrow {
				t.Errorf("the kernel knows partition 3 as %d bytes; grown %v, want %v", m.kernel[3], grown, tc.wantGrow)
			}
			if moved := m.writes() > 0; moved != tc.wantOpen {
				t.Errorf("%d writes to the disk, want writes %v", m.writes(), tc.wantOpen)
			}
			if len(e.warnings) > 0 && tc.cmdline == "" {
				t.Errorf("warnings: %q", e.warnings)
			}
		})
	}
}

// TestBootRepairsPrimaryGPT: a disk on which the kernel found no partitions
// because its primary GPT is corrupt (a cut while it was rewritten) gets
// its primary rewritten from the backup and re-read; the boot goes on with
// the partitions the kernel then finds, loudly.
func TestBootRepairsPrimaryGPT(t *testing.T) {
	m := imageDisk(t, imageSize)
	m.data[512+40] ^= 0xff // the primary header's CRC no longer matches
	sys := &fakeSys{devs: []BlockDev{disk("vda", 0)}, devsAfterReread: standardDisk(),
		probe: map[string]Content{"/dev/vda3": ContentExt4}, disks: map[string]Disk{"vda": m}}
	e := &bootEnv{sys: sys}
	b, err := e.run(t)
	if err != nil {
		t.Fatalf("Run() = %v, want a boot from the repaired table", err)
	}
	if m.reread != 1 {
		t.Errorf("the table was re-read %d times, want 1", m.reread)
	}
	if _, err := readGPT(m, 1, uint64(imageSize/512), 512); err != nil {
		t.Errorf("primary GPT after the boot: %v", err)
	}
	if !e.warned("/dev/vda: primary GPT repaired from the backup") {
		t.Errorf("no warning of the repair: %q", e.warnings)
	}
	if st := b.State(); st.Mode != layout.ModePersistent || len(st.Warnings) == 0 {
		t.Errorf("state = %+v, want persistent with a warning", st)
	}
}

// TestBootFormatSize: a blank data partition is formatted whole, grow on
// or off (the format costs the same at any size).
func TestBootFormatSize(t *testing.T) {
	for _, tc := range []struct {
		config, want string
	}{
		{"", "format /dev/vda3 ext4 rootfs_data 0"},
		{"grow = false\n", "format /dev/vda3 ext4 rootfs_data 0"},
	} {
		sys := &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentBlank}}
		e := &bootEnv{sys: sys, config: tc.config}
		if _, err := e.run(t); err != nil {
			t.Fatal(err)
		}
		if indexOf(sys.calls, tc.want) < 0 {
			t.Errorf("config %q: no call %q in:\n%s", tc.config, tc.want, strings.Join(sys.calls, "\n"))
		}
	}
}

// TestBootReplaysJournalBeforeRepair: a data filesystem the kernel refuses
// (EUCLEAN) with a journal to replay (a cut during an online grow that
// added a meta_bg descriptor block) is replayed and mounted, not repaired.
func TestBootReplaysJournalBeforeRepair(t *testing.T) {
	sys := &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4},
		mountFail: map[string]int{"/overlay": 1}, journalPending: true}
	e := &bootEnv{sys: sys}
	b, err := e.run(t)
	if err != nil {
		t.Fatal(err)
	}
	replay, mount := indexOf(sys.calls, "replay-journal /dev/vda3"), -1
	for i, c := range sys.calls {
		if strings.HasPrefix(c, "mount /dev/vda3 /overlay") {
			mount = i // the last one
		}
	}
	if replay < 0 || mount < replay || indexOf(sys.calls, "repair") >= 0 {
		t.Errorf("want the journal replayed, then the mount, and no repair:\n%s", strings.Join(sys.calls, "\n"))
	}
	if st := b.State(); st.Mode != layout.ModePersistent {
		t.Errorf("mode %s, want persistent", st.Mode)
	}
}
