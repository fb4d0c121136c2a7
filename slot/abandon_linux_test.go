package slot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// A confirmed slot whose root failed its integrity check is given up for
// a confirmed other slot: its entry ends with no tries left, as the
// loaders read it, and status names the failure; with no confirmed other
// slot nothing changes.
func TestAbandon(t *testing.T) {
	oldB := Entry{Slot: layout.SlotB, Generation: 0, BuildID: "bbbbbbbbbbbbbbbb", Options: "console=ttyS0", Loader: layout.LoaderUEFI}
	oldBU := Entry{Slot: layout.SlotB, Generation: 0, BuildID: "bbbbbbbbbbbbbbbb", Options: "console=ttyAMA0", Loader: layout.LoaderUBoot}
	reason := "root integrity failure on rootfs_a: data block 7 does not match the hash tree"
	for _, tc := range []struct {
		name        string
		opts        deviceOpts
		wantErr     string
		wantEntries []string
		wantTo      string
	}{
		{name: "systemd-boot", opts: deviceOpts{entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b.conf": oldB}},
			wantEntries: []string{"ovroot-a+0-1.conf", "ovroot-b.conf"}, wantTo: "ovroot-a+0-1.conf"},
		{name: "systemd-boot, a twin a power cut left", opts: deviceOpts{entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-a+0-1.conf": factoryA, "ovroot-b.conf": oldB}},
			wantEntries: []string{"ovroot-a+0-1.conf", "ovroot-b.conf"}, wantTo: "ovroot-a+0-1.conf"},
		{name: "U-Boot", opts: deviceOpts{info: ubootInfo, files: map[string]string{"ovroot-a.env": factoryAU.Env(0), "ovroot-b.env": oldBU.Env(0)}},
			wantEntries: []string{"ovroot-a.env", "ovroot-a.try1", "ovroot-b.env"}, wantTo: "ovroot-a.env with its 1 try used"},
		{name: "the other slot on trial", opts: deviceOpts{entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b+2-1.conf": oldB}},
			wantErr: "slot b: no confirmed slot to fall back to", wantEntries: []string{"ovroot-a.conf", "ovroot-b+2-1.conf"}},
		{name: "the other slot abandoned", opts: deviceOpts{entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b+0-3.conf": oldB}},
			wantErr: "slot b: no confirmed slot to fall back to", wantEntries: []string{"ovroot-a.conf", "ovroot-b+0-3.conf"}},
		{name: "no other slot", opts: deviceOpts{},
			wantErr: "slot b: no confirmed slot to fall back to", wantEntries: []string{"ovroot-a.conf"}},
		{name: "U-Boot, the other slot's tries used", opts: deviceOpts{info: ubootInfo, files: map[string]string{"ovroot-a.env": factoryAU.Env(0), "ovroot-b.env": oldBU.Env(1), "ovroot-b.try1": "1"}},
			wantErr: "no confirmed slot", wantEntries: []string{"ovroot-a.env", "ovroot-b.env", "ovroot-b.try1"}},
		{name: "running slot on trial", opts: deviceOpts{entries: map[string]Entry{"ovroot-a+1-1.conf": factoryA, "ovroot-b.conf": oldB},
			state: `{"mode":"persistent","root_device":"/dev/vda2","slot":{"slot":"a","build_id":"aaaaaaaaaaaaaaaa","trial":{"entry":"loader/entries/ovroot-a+1-1.conf","tries_left":1,"tries_done":1}},"timings_ms":{}}`},
			wantErr: "slot a is on trial", wantEntries: []string{"ovroot-a+1-1.conf", "ovroot-b.conf"}},
		{name: "entry of another build", opts: deviceOpts{entries: map[string]Entry{"ovroot-a.conf": factoryA, "ovroot-b.conf": oldB},
			state: `{"mode":"persistent","root_device":"/dev/vda2","slot":{"slot":"a","build_id":"cccccccccccccccc"},"timings_ms":{}}`},
			wantErr: "boots build aaaaaaaaaaaaaaaa, but this boot is build cccccccccccccccc", wantEntries: []string{"ovroot-a.conf", "ovroot-b.conf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, tc.opts)
			before := d.tree()
			if err := AppendEvent(filepath.Join(d.root, layout.OverlayDir), layout.SlotEvent{Slot: layout.SlotA, BuildID: "aaaaaaaaaaaaaaaa", Event: EventGivenUp, Reason: reason}); err != nil {
				t.Fatal(err)
			}
			res, err := d.sys.Abandon()
			if got := d.entryFiles(); !equal(got, tc.wantEntries) {
				t.Errorf("entries = %v, want %v", got, tc.wantEntries)
			}
			infos, serr := d.sys.Slots()
			if serr != nil {
				t.Fatal(serr)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Abandon = %+v, %v; want an error with %q", res, err, tc.wantErr)
				}
				after := d.tree()
				delete(after, "overlay/.ovroot/slot-log")
				if diff := diffTrees(before, after); len(diff) > 0 {
					t.Errorf("a refused Abandon changed:\n%s", strings.Join(diff, "\n"))
				}
				if strings.Contains(infos[0].Line(), "ABANDONED") {
					t.Errorf("slot a after a refused Abandon: %s", infos[0].Line())
				}
				if tc.name == "the other slot on trial" && !errors.Is(err, ErrNoFallback) {
					t.Errorf("err %v is not ErrNoFallback", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Abandon: %v", err)
			}
			if res.Slot != layout.SlotA || res.Other != layout.SlotB || res.To != tc.wantTo {
				t.Errorf("Abandon = %+v", res)
			}
			want := "slot a: ABANDONED: build aaaaaaaaaaaaaaaa was confirmed, then failed at boot: " + reason
			if got := infos[0].Line(); got != want {
				t.Errorf("status: %q\nwant %q", got, want)
			}
			if got := infos[1].Line(); !strings.HasSuffix(got, "confirmed") {
				t.Errorf("status of the other slot: %q", got)
			}
			if tc.opts.info == ubootInfo {
				if data, _ := os.ReadFile(d.esp("loader/entries/ovroot-a.env")); string(data) != factoryAU.Env(1) {
					t.Errorf("ovroot-a.env:\n%s\nwant:\n%s", data, factoryAU.Env(1))
				}
				if _, err := os.Stat(d.esp("loader/entries/ovroot-a.try1")); err != nil {
					t.Errorf("no marker: %v", err)
				}
			}
			if got := strings.Join(d.mounter.calls, ";"); got != "mount vda1 rw=true;unmount;mount vda1 rw=false;unmount" {
				t.Errorf("mounts: %s", got)
			}
		})
	}
}
