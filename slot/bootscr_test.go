package slot

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

var (
	scrA = Entry{Slot: layout.SlotA, Generation: 1, BuildID: "aaaaaaaaaaaaaaaa", Options: "console=ttyAMA0 root=a", Loader: layout.LoaderUBoot}
	scrB = Entry{Slot: layout.SlotB, Generation: 2, BuildID: "bbbbbbbbbbbbbbbb", Options: "console=ttyAMA0 quiet", Loader: layout.LoaderUBoot, Release: "6.1.0-b"}
)

// bootPartition is a boot partition with both slots' kernels and the given
// entry files and markers (names under loader/entries/).
func bootPartition(entries map[string]string) map[string][]byte {
	files := map[string][]byte{
		"slot-a/vmlinuz": []byte("kernel a"), "slot-a/initrd.img": []byte("initrd a"),
		"slot-b/vmlinuz": []byte("kernel b"), "slot-b/initrd.img": []byte("initrd b"),
	}
	for name, text := range entries {
		files[layout.EntriesDir+"/"+name] = []byte(text)
	}
	return files
}

func markers(files map[string][]byte) []string {
	var m []string
	for name := range files {
		if _, _, ok := ParseMarker(filepath.Base(name)); ok {
			m = append(m, filepath.Base(name))
		}
	}
	slices.Sort(m)
	return m
}

// TestBootScriptRuns runs boot.scr (both arches' scripts) in the hush
// interpreter: what it boots, with which command line, and the marker it
// leaves, for each state of the entries.
func TestBootScriptRuns(t *testing.T) {
	cases := []struct {
		name          string
		entries       map[string]string
		fatwriteFails bool
		noKernel      string // a slot whose kernel is missing
		slot          string // booted; "" = none
		try           string // the ovroot.try= it adds
		markers       []string
		echo          string // a line the script must print
	}{
		{name: "both confirmed: the newer", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(0)}, slot: "b"},
		{name: "only a", entries: map[string]string{"ovroot-a.env": scrA.Env(0)}, slot: "a"},
		{name: "new trial", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(3)},
			slot: "b", try: "1/0x3", markers: []string{"ovroot-b.try1"}, echo: "ovroot: slot b on trial: boot 1 of 0x3"},
		{name: "last try", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(3), "ovroot-b.try1": "1", "ovroot-b.try2": "1"},
			slot: "b", try: "3/0x3", markers: []string{"ovroot-b.try1", "ovroot-b.try2", "ovroot-b.try3"}},
		{name: "tries used: abandoned", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(3), "ovroot-b.try1": "1", "ovroot-b.try2": "1", "ovroot-b.try3": "1"},
			slot: "a", markers: []string{"ovroot-b.try1", "ovroot-b.try2", "ovroot-b.try3"}, echo: "ovroot: slot b abandoned: tried 3 of 0x3 times, never confirmed"},
		{name: "a gap in the markers counts up to it", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(3), "ovroot-b.try1": "1", "ovroot-b.try3": "1"},
			slot: "b", try: "2/0x3", markers: []string{"ovroot-b.try1", "ovroot-b.try2", "ovroot-b.try3"}},
		{name: "more than 9 tries count in hex", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(0x11),
			"ovroot-b.try1": "1", "ovroot-b.try2": "1", "ovroot-b.try3": "1", "ovroot-b.try4": "1", "ovroot-b.try5": "1", "ovroot-b.try6": "1", "ovroot-b.try7": "1", "ovroot-b.try8": "1", "ovroot-b.try9": "1"},
			slot: "b", try: "a/0x11", markers: []string{"ovroot-b.try1", "ovroot-b.try2", "ovroot-b.try3", "ovroot-b.try4", "ovroot-b.try5", "ovroot-b.try6", "ovroot-b.try7", "ovroot-b.try8", "ovroot-b.try9", "ovroot-b.trya"}},
		{name: "confirmed ignores markers", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(0), "ovroot-b.try1": "1", "ovroot-b.try2": "1"},
			slot: "b", markers: []string{"ovroot-b.try1", "ovroot-b.try2"}},
		{name: "marker write fails: the confirmed slot", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(3)}, fatwriteFails: true,
			slot: "a", echo: "ovroot: cannot count a trial boot of slot b (fatwrite failed): booting slot a"},
		{name: "trial kernel missing: the confirmed slot in the same boot", entries: map[string]string{"ovroot-a.env": scrA.Env(0), "ovroot-b.env": scrB.Env(3)}, noKernel: "b",
			slot: "a", markers: []string{"ovroot-b.try1"}, echo: "ovroot: booting slot b failed"},
		{name: "both abandoned: the newest anyway", entries: map[string]string{"ovroot-a.env": scrA.Env(1), "ovroot-a.try1": "1", "ovroot-b.env": scrB.Env(1), "ovroot-b.try1": "1"},
			slot: "b", markers: []string{"ovroot-a.try1", "ovroot-b.try1"}},
		{name: "no entries", entries: map[string]string{}, echo: "ovroot: no slot entry in loader/entries"},
	}
	for _, arch := range []layout.Arch{layout.ARM, layout.ARM64} {
		script := BootScript(arch)
		for _, c := range cases {
			t.Run(string(arch)+"/"+c.name, func(t *testing.T) {
				files := bootPartition(c.entries)
				if c.noKernel != "" {
					delete(files, "slot-"+c.noKernel+"/vmlinuz")
				}
				got, after := runHush(t, script, files, c.fatwriteFails)
				if got.Slot != c.slot {
					t.Fatalf("boot.scr booted slot %q, want %q (printed %q)", got.Slot, c.slot, got.Echo)
				}
				if c.slot != "" {
					e := map[string]Entry{"a": scrA, "b": scrB}[c.slot]
					want := e.KernelCmdline()
					if c.try != "" {
						want += " " + layout.TryParam + "=" + c.try
					}
					if got.Bootargs != want {
						t.Errorf("bootargs %q, want %q", got.Bootargs, want)
					}
				}
				if m := markers(after); !slices.Equal(m, c.markers) {
					t.Errorf("markers after the boot %v, want %v", m, c.markers)
				}
				if c.echo != "" && !slices.Contains(got.Echo, c.echo) {
					t.Errorf("boot.scr printed %q, want a line %q", got.Echo, c.echo)
				}
			})
		}
	}
}

// TestBootScriptTornEntry: boot.scr imports both entry files into one U-Boot
// environment. A torn ovroot-b.env (cut at every byte) must not pass for a
// whole entry by borrowing what slot a's file left in the environment
// (ovroot_ok=1, its generation, tries or command line): boot.scr must boot
// slot a with a's own command line and count no trial of b, exactly when
// ListEntries finds b's file incomplete. Likewise a torn ovroot-a.env next
// to a whole b.
func TestBootScriptTornEntry(t *testing.T) {
	script := BootScript(layout.ARM)
	for _, tc := range []struct {
		name        string
		torn, whole string // slots
		text        string // the torn file's whole text
		other       string
	}{
		{"b torn, a confirmed", "b", "a", scrB.Env(3), scrA.Env(0)},
		{"b torn, a confirmed and newer", "b", "a", Entry{Slot: layout.SlotB, Generation: 1, BuildID: scrB.BuildID, Loader: layout.LoaderUBoot}.Env(0), Entry{Slot: layout.SlotA, Generation: 9, BuildID: scrA.BuildID, Options: scrA.Options, Loader: layout.LoaderUBoot}.Env(0)},
		{"a torn, b confirmed", "a", "b", scrA.Env(0), scrB.Env(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wholeEntry := map[string]Entry{"a": scrA, "b": scrB}[tc.whole]
			if e, _, err := ParseEnv(tc.other); err == nil {
				wholeEntry = e
			}
			tornName, wholeName := "ovroot-"+tc.torn+".env", "ovroot-"+tc.whole+".env"
			accepted := 0
			for n := 0; n < len(tc.text); n++ {
				files := bootPartition(map[string]string{wholeName: tc.other, tornName: tc.text[:n]})
				goWhole := listWhole(t, files, tornName)
				got, after := runHush(t, script, files, false)
				if goWhole {
					// Only a file cut after its ovroot_ok=1 line is whole.
					if !strings.HasSuffix(tc.text[:n], "ovroot_ok=1") {
						t.Fatalf("cut at %d: ListEntries takes %q for whole", n, tc.text[:n])
					}
					accepted++
					continue
				}
				if got.Slot != tc.whole || got.Bootargs != wholeEntry.KernelCmdline() {
					t.Fatalf("%s cut at byte %d of %d (%q): boot.scr booted slot %q with %q; want slot %s with %q",
						tornName, n, len(tc.text), tc.text[:n], got.Slot, got.Bootargs, tc.whole, wholeEntry.KernelCmdline())
				}
				if m := markers(after); len(m) != 0 {
					t.Fatalf("%s cut at byte %d: boot.scr left markers %v", tornName, n, m)
				}
			}
			if accepted > 1 {
				t.Errorf("ListEntries took %d torn prefixes for whole", accepted)
			}
		})
	}
}

// listWhole reports whether ListEntries takes name for a whole entry.
func listWhole(t *testing.T, files map[string][]byte, name string) bool {
	t.Helper()
	dir := t.TempDir()
	for p, data := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := ListEntries(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, se := range ents {
		if se.File == name {
			return se.Err == nil
		}
	}
	return false
}
