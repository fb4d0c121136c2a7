package slot

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// The U-Boot side on a fake device: entry files plus the markers boot.scr
// creates, through an upgrade, a counted boot, mark-good and power cuts.

const ubootInfo = `{"arch":"arm","loader":"uboot","board":"generic","cmdline":"console=ttyAMA0"}`

var factoryAU = Entry{Slot: layout.SlotA, Generation: 1, BuildID: "aaaaaaaaaaaaaaaa", Options: "console=ttyAMA0", Loader: layout.LoaderUBoot}

func ubootBundle(m *Manifest) { m.Arch, m.Loader = layout.ARM, layout.LoaderUBoot }

func TestUBootUpgradeMarkGood(t *testing.T) {
	oldB := Entry{Slot: layout.SlotB, Generation: 7, BuildID: "bbbbbbbbbbbbbbbb", Loader: layout.LoaderUBoot}
	d := newDevice(t, deviceOpts{info: ubootInfo, bundle: ubootBundle, files: map[string]string{
		"ovroot-a.env": factoryAU.Env(0),
		// b: abandoned, its 3 tries used; and a marker past them.
		"ovroot-b.env": oldB.Env(3), "ovroot-b.try1": "1", "ovroot-b.try2": "1", "ovroot-b.try3": "1", "ovroot-b.try5": "1",
	}})
	infos, err := d.sys.Slots()
	if err != nil {
		t.Fatal(err)
	}
	if got := infos[1].Line(); got != "slot b: ABANDONED: build bbbbbbbbbbbbbbbb was tried 3 times and never confirmed" {
		t.Errorf("before the upgrade: %s", got)
	}
	if got := infos[0].Line(); got != "slot a: generation 1, build aaaaaaaaaaaaaaaa, confirmed, running" {
		t.Errorf("before the upgrade: %s", got)
	}

	res, err := d.sys.Upgrade(d.bundle, UpgradeOptions{})
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	newB := Entry{Slot: layout.SlotB, Generation: 8, BuildID: BuildIDOf(d.rootImg), Options: d.m.Cmdline, Loader: layout.LoaderUBoot, Release: d.m.KernelRelease}
	if res.Entry != "ovroot-b.env" || res.Generation != 8 {
		t.Errorf("Upgrade = %+v", res)
	}
	// Every marker of b's last trial is gone with its entry: the new
	// trial starts with all its tries.
	if got := d.entryFiles(); !equal(got, []string{"ovroot-a.env", "ovroot-b.env"}) {
		t.Errorf("entries = %v", got)
	}
	if data, _ := os.ReadFile(d.esp("loader/entries/ovroot-b.env")); string(data) != newB.Env(3) {
		t.Errorf("ovroot-b.env:\n%s\nwant:\n%s", data, newB.Env(3))
	}
	if data, _ := os.ReadFile(d.esp("loader/entries/ovroot-a.env")); string(data) != factoryAU.Env(0) {
		t.Error("the running slot's entry changed")
	}

	// boot.scr boots b on trial: marker 1.
	write(t, d.esp("loader/entries/ovroot-b.try1"), []byte("1"))
	infos, _ = d.sys.Slots()
	if got, want := infos[1].Line(), "slot b: generation 8, build "+newB.BuildID+", on trial (2 of 3 tries left)"; got != want {
		t.Errorf("after one counted boot: %q, want %q", got, want)
	}

	// Running b now: mark-good.
	state := `{"mode":"persistent","root_device":"/dev/vda3","slot":{"slot":"b","build_id":"` + newB.BuildID + `","trial":{"entry":"loader/entries/ovroot-b.env","tries_left":2,"tries_done":1}},"timings_ms":{}}`
	write(t, filepath.Join(d.root, layout.StateFile), []byte(state))
	mg, err := d.sys.MarkGood()
	if err != nil {
		t.Fatalf("MarkGood: %v", err)
	}
	if mg.From != "ovroot-b.env with 1 of 3 tries used" || mg.Entry != "ovroot-b.env with tries 0" {
		t.Errorf("MarkGood = %+v", mg)
	}
	if got := d.entryFiles(); !equal(got, []string{"ovroot-a.env", "ovroot-b.env"}) {
		t.Errorf("entries after mark-good = %v", got)
	}
	if data, _ := os.ReadFile(d.esp("loader/entries/ovroot-b.env")); string(data) != newB.Env(0) {
		t.Errorf("ovroot-b.env after mark-good:\n%s\nwant:\n%s", data, newB.Env(0))
	}
	infos, _ = d.sys.Slots()
	if got, want := infos[1].Line(), "slot b: generation 8, build "+newB.BuildID+", confirmed, running"; got != want {
		t.Errorf("after mark-good: %q, want %q", got, want)
	}
	// A marker a power cut left behind the confirmation is cleaned up by
	// the next mark-good, which changes nothing else.
	write(t, d.esp("loader/entries/ovroot-b.try2"), []byte("1"))
	if mg, err := d.sys.MarkGood(); err != nil || mg.From != "" {
		t.Errorf("second MarkGood = %+v, %v", mg, err)
	}
	if got := d.entryFiles(); !equal(got, []string{"ovroot-a.env", "ovroot-b.env"}) {
		t.Errorf("entries after the second mark-good = %v", got)
	}
}

// TestUBootUpgradeRefusesOnTrial: a running slot on trial has the other
// slot as its only fallback.
func TestUBootUpgradeRefusesOnTrial(t *testing.T) {
	trialA := factoryAU
	d := newDevice(t, deviceOpts{info: ubootInfo, bundle: ubootBundle, files: map[string]string{
		"ovroot-a.env": trialA.Env(3), "ovroot-a.try1": "1",
		"ovroot-b.env": Entry{Slot: layout.SlotB, Generation: 0, BuildID: "bbbbbbbbbbbbbbbb"}.Env(0),
	}})
	before := d.tree()
	_, err := d.sys.Upgrade(d.bundle, UpgradeOptions{})
	if err == nil || !strings.Contains(err.Error(), "the running slot a is on trial (ovroot-a.env)") {
		t.Fatalf("Upgrade = %v", err)
	}
	if diff := diffTrees(before, d.tree()); len(diff) > 0 {
		t.Errorf("a refused upgrade changed:\n%s", strings.Join(diff, "\n"))
	}
}

// TestUBootUpgradePowerCut is TestUpgradePowerCut for a U-Boot image:
// also, the new entry never appears while markers of the old trial are
// there to eat its tries.
func TestUBootUpgradePowerCut(t *testing.T) {
	oldB := Entry{Slot: layout.SlotB, Generation: 1, BuildID: BuildIDOf(random(3, partSize)[:4096]), Loader: layout.LoaderUBoot}
	for at := 1; ; at++ {
		d := newDevice(t, deviceOpts{info: ubootInfo, bundle: ubootBundle, rootLen: 3<<20 + 5, files: map[string]string{
			"ovroot-a.env": factoryAU.Env(0), "ovroot-b.env": oldB.Env(2), "ovroot-b.try1": "1",
		}})
		newB := Entry{Slot: layout.SlotB, Generation: 2, BuildID: d.m.BuildID, Options: d.m.Cmdline, Loader: d.m.Loader, Release: d.m.KernelRelease}
		os.Truncate(filepath.Join(d.root, "dev/vda3"), 3<<20+4096)
		write(t, d.esp("slot-b/vmlinuz"), []byte("kernel b"))
		write(t, d.esp("slot-b/initrd.img"), []byte("initrd b"))
		finished := d.upgradeCutAt(at)
		d.checkBootableIn(at, map[string]bool{factoryAU.Env(0): true, oldB.Env(2): true, newB.Env(3): true}, "ovroot-a.env")
		if data, err := os.ReadFile(d.esp("loader/entries/ovroot-b.env")); err == nil && bytes.Equal(data, []byte(newB.Env(3))) {
			if _, err := os.Stat(d.esp("loader/entries/ovroot-b.try1")); err == nil {
				t.Fatalf("cut at %d: the new entry is there with the old trial's marker", at)
			}
		}
		if finished {
			d.checkFinished(at, "ovroot-a.env", "ovroot-b.env")
			return
		}
	}
}

// TestUBootMarkGoodPowerCut cuts mark-good of a U-Boot trial (slot b, 2 of
// 3 tries used) at every write and step. After each cut slot b's entry is
// either still the whole trial entry with both markers of the boots done,
// or the whole confirmed entry (tries 0, markers no longer count): never a
// trial with fewer markers than boots done (boot.scr would grant extra
// tries) nor a torn entry. A mark-good run after the cut confirms it.
func TestUBootMarkGoodPowerCut(t *testing.T) {
	trialB := Entry{Slot: layout.SlotB, Generation: 2, BuildID: "bbbbbbbbbbbbbbbb", Options: "console=ttyAMA0", Loader: layout.LoaderUBoot}
	state := `{"mode":"persistent","root_device":"/dev/vda3","slot":{"slot":"b","build_id":"bbbbbbbbbbbbbbbb","trial":{"entry":"loader/entries/ovroot-b.env","tries_left":1,"tries_done":2}},"timings_ms":{}}`
	entryB := func(d *testDevice) (tries int, markers []string) {
		t.Helper()
		data, err := os.ReadFile(d.esp("loader/entries/ovroot-b.env"))
		if err != nil {
			t.Fatalf("ovroot-b.env: %v", err)
		}
		e, tries, err := ParseEnv(string(data))
		if err != nil || e.BuildID != trialB.BuildID || e.Generation != trialB.Generation {
			t.Fatalf("ovroot-b.env is not whole (%v):\n%s", err, data)
		}
		for _, f := range d.entryFiles() {
			if sl, _, ok := ParseMarker(f); ok && sl == layout.SlotB {
				markers = append(markers, f)
			}
		}
		return tries, markers
	}
	cuts := 0
	for at := 1; ; at++ {
		d := newDevice(t, deviceOpts{info: ubootInfo, state: state, files: map[string]string{
			"ovroot-a.env": factoryAU.Env(0),
			"ovroot-b.env": trialB.Env(3), "ovroot-b.try1": "1", "ovroot-b.try2": "1",
		}})
		finished := func() (done bool) {
			d.sys.cut = &powerCut{at: at}
			defer func() {
				if r := recover(); r != nil && r != errPowerCut {
					panic(r)
				}
			}()
			if _, err := d.sys.MarkGood(); err != nil {
				t.Fatalf("cut at %d: MarkGood: %v", at, err)
			}
			return true
		}()
		d.sys.cut = nil
		tries, markers := entryB(d)
		switch {
		case tries == 0:
		case tries == 3 && equal(markers, []string{"ovroot-b.try1", "ovroot-b.try2"}):
		default:
			t.Fatalf("cut at %d: ovroot-b.env has tries %d with markers %v: want the trial with both markers, or tries 0", at, tries, markers)
		}
		if data, _ := os.ReadFile(d.esp("loader/entries/ovroot-a.env")); string(data) != factoryAU.Env(0) {
			t.Fatalf("cut at %d: the other slot's entry changed", at)
		}
		if finished {
			if tries != 0 || len(markers) != 0 {
				t.Fatalf("mark-good finished with tries %d, markers %v", tries, markers)
			}
			if cuts < 4 {
				t.Fatalf("only %d cut points: the cut hooks are not reached", cuts)
			}
			return
		}
		cuts++
		// The power cut ended the process that held the ESP lock, and /run
		// is a tmpfs: the next boot starts without it.
		os.Remove(filepath.Join(d.root, layout.RunDir, "esp.lock"))
		// The next mark-good (the confirmer again, or a person) finishes it.
		if _, err := d.sys.MarkGood(); err != nil {
			t.Fatalf("cut at %d, then MarkGood: %v", at, err)
		}
		if tries, markers := entryB(d); tries != 0 || len(markers) != 0 {
			t.Fatalf("cut at %d, then MarkGood: tries %d, markers %v; want confirmed, no markers", at, tries, markers)
		}
	}
}
