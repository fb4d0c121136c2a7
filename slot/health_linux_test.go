package slot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/layout"
)

// A trial boot is confirmed only when every executable in health.d exits
// 0; a failing or hanging check leaves the entries as they were, says
// which check and why, and is logged; a slot confirmed earlier in the boot
// is not checked again.
func TestHealthGate(t *testing.T) {
	trialB := Entry{Slot: layout.SlotB, Generation: 2, BuildID: "bbbbbbbbbbbbbbbb", Loader: layout.LoaderUEFI}
	stateB := `{"mode":"persistent","root_device":"/dev/vda3","slot":{"slot":"b","build_id":"bbbbbbbbbbbbbbbb","trial":{"entry":"loader/entries/ovroot-b+2-1.conf","tries_left":2,"tries_done":1}},"timings_ms":{}}`
	for _, tc := range []struct {
		name     string
		checks   map[string]string // name -> script ("" = not executable)
		entry    string
		wantErr  string
		wantSays string
	}{
		{"all pass", map[string]string{"10-a": "#!/bin/sh\nexit 0\n", "20-b": "#!/bin/sh\ntest -n \"$PATH\"\n", "README": ""}, "ovroot-b+2-1.conf", "", "2 health checks passed"},
		{"none", nil, "ovroot-b+2-1.conf", "", "no health checks"},
		{"one fails", map[string]string{"10-a": "#!/bin/sh\nexit 0\n", "20-net": "#!/bin/sh\necho checking\necho uplink down >&2\nexit 3\n", "30-never": "#!/bin/sh\ntouch /tmp/ovroot-health-30-ran\n"}, "ovroot-b+2-1.conf",
			"slot b stays on trial: health check 20-net FAILED (exit status 3): uplink down", ""},
		{"one hangs", map[string]string{"10-hang": "#!/bin/sh\nsleep 30\n"}, "ovroot-b+2-1.conf", "health check 10-hang FAILED (timed out after 300ms)", ""},
		{"confirmed earlier in the boot", map[string]string{"10-fail": "#!/bin/sh\nexit 1\n"}, "ovroot-b.conf", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, deviceOpts{state: stateB, entries: map[string]Entry{"ovroot-a.conf": factoryA, tc.entry: trialB}})
			dir := filepath.Join(d.root, layout.HealthDir)
			os.MkdirAll(dir, 0o755)
			for name, script := range tc.checks {
				mode := os.FileMode(0o755)
				if script == "" {
					mode = 0o644
				}
				os.WriteFile(filepath.Join(dir, name), []byte(script), mode)
			}
			// The checks run as the device would (path /etc/ovroot/health.d
			// under the test root).
			d.sys.HealthTimeout = 300 * time.Millisecond
			before := d.entryFiles()
			start := time.Now()
			res, err := d.sys.MarkGood()
			if time.Since(start) > 10*time.Second {
				t.Errorf("MarkGood took %s: the hanging check was not stopped", time.Since(start))
			}
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrHealth) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("MarkGood = %v, want a health error with %q", err, tc.wantErr)
				}
				if got := d.entryFiles(); !equal(got, before) {
					t.Errorf("a failed check changed the entries: %v, were %v", got, before)
				}
				log, _ := os.ReadFile(layout.Meta(filepath.Join(d.root, layout.OverlayDir), layout.SlotLogFile))
				if !strings.Contains(string(log), `"event":"health-failed"`) {
					t.Errorf("slot log lacks the failure:\n%s", log)
				}
				h, herr := d.sys.ReadHealth()
				if herr != nil || h == nil || h.Passed || h.Failed() == nil {
					t.Errorf("health result %+v, %v", h, herr)
				}
				if _, err := os.Stat("/tmp/ovroot-health-30-ran"); err == nil {
					os.Remove("/tmp/ovroot-health-30-ran")
					t.Error("a check after the failed one ran")
				}
				return
			}
			if err != nil {
				t.Fatalf("MarkGood: %v", err)
			}
			if !strings.Contains(res.Health, tc.wantSays) {
				t.Errorf("health %q, want %q", res.Health, tc.wantSays)
			}
			if got := d.entryFiles(); !equal(got, []string{"ovroot-a.conf", "ovroot-b.conf"}) {
				t.Errorf("entries after the checks passed: %v", got)
			}
		})
	}
}
