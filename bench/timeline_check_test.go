package bench

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
	"time"
)

const sampleConsole = `bench-dmesg: [    1.500000] Run /init as init process
bench-dmesg: [    1.650000] ovroot: trace: start
bench-dmesg: [    1.700000] ovroot: loaded 13 modules
bench-dmesg: [    2.100000] ovroot: trace: modules
bench-dmesg: [    2.110000] ovroot: trace: devices
bench-dmesg: [    2.300000] bench: real init
`

// The timeline of a boot is read from the kernel timestamps of its marks:
// each step from the previous mark, the last to the real init's line.
func TestParseTimeline(t *testing.T) {
	steps, err := parseTimeline(sampleConsole)
	if err != nil {
		t.Fatal(err)
	}
	want := []step{{"start", 0.15}, {"modules", 0.45}, {"devices", 0.01}, {"switch_root", 0.19}}
	if len(steps) != len(want) {
		t.Fatalf("steps %v, want %v", steps, want)
	}
	for i := range want {
		if steps[i].name != want[i].name || math.Abs(steps[i].dur-want[i].dur) > 1e-9 {
			t.Errorf("step %d = %v, want %v", i, steps[i], want[i])
		}
	}
	if _, err := parseTimeline(strings.ReplaceAll(sampleConsole, "trace: ", "")); err == nil {
		t.Errorf("a console without marks gave a timeline")
	}
}

// The medians are per step; the table puts the preinit's step beside
// ovroot's and a dash where it has none; the SVG is well-formed XML.
func TestTimelineOutput(t *testing.T) {
	ov := medianTimeline([][]step{
		{{"start", 0.1}, {"config", 0.002}, {"switch_root", 0.05}},
		{{"start", 0.3}, {"config", 0.004}, {"switch_root", 0.07}},
		{{"start", 0.2}, {"config", 0.003}, {"switch_root", 0.06}},
	})
	if ov[0].dur != 0.2 || ov[1].dur != 0.003 {
		t.Errorf("medians %v", ov)
	}
	tl := timelines{ovroot: ov, preinit: []step{{"start", 0.03}, {"switch_root", 0.05}}, boots: 3}
	tab := tl.table()
	for _, w := range []string{"| start | 200 | 30 |", "| config | 3 | — |", "| sum of medians | 263 | 80 |"} {
		if !strings.Contains(tab, w) {
			t.Errorf("table lacks %q:\n%s", w, tab)
		}
	}
	d := xml.NewDecoder(strings.NewReader(tl.svg()))
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Errorf("svg: %v", err)
			}
			break
		}
	}
}

// A traced build's output gives its steps in order (the start line and
// other lines left out); the table has a column per tree, the sums and the
// plain mksquashfs beneath.
func TestBuildSteps(t *testing.T) {
	out := "ovroot: trace: start 0 ms\novroot: loader: uefi\novroot: trace: checks 80 ms\novroot: trace: squashfs 900 ms\nboot it: ovroot run x.img\novroot: trace: boot 120 ms\n"
	steps, err := buildSteps(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []step{{"checks", 0.08}, {"squashfs", 0.9}, {"boot", 0.12}}
	if len(steps) != len(want) {
		t.Fatalf("steps %v, want %v", steps, want)
	}
	for i := range want {
		if steps[i].name != want[i].name || math.Abs(steps[i].dur-want[i].dur) > 1e-9 {
			t.Errorf("step %d = %v, want %v", i, steps[i], want[i])
		}
	}
	if _, err := buildSteps("ovroot: image: x.img\n"); err == nil {
		t.Error("an untraced build gave steps")
	}
	tab := buildStepsTable([]buildTimeline{{tree: "64 MiB tree", steps: steps, plain: 700 * time.Millisecond, n: 5}})
	for _, w := range []string{"| 64 MiB tree (5 builds) |", "| squashfs | 900 |", "| sum of medians | 1100 |", "| plain mksquashfs (median) | 700 |"} {
		if !strings.Contains(tab, w) {
			t.Errorf("table lacks %q:\n%s", w, tab)
		}
	}
}
