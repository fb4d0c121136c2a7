package bench

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The hand-over timeline: ovroot's init (with ovroot.trace) and the busybox
// preinit each write "trace: STEP" to the kernel log when a step ends; the
// real init prints the kernel's timestamps of those lines, of
// "Run /init as init process" and of its own first line. A step's time is
// from the previous mark (or Run /init) to its own; "switch_root" is from
// the last mark to the real init's first line.

// step is one step of a boot and how long it took, in seconds.
type step struct {
	name string
	dur  float64
}

// stepWhat says what each step does, for the table.
var stepWhat = map[string]string{
	"start":       "ovroot: Go runtime start-up, mount /proc /sys /dev /run, read the command line; preinit: busybox sh start-up and the same mounts",
	"config":      "read /etc/ovroot/init.toml (preinit: none)",
	"modules":     "load the kernel modules, one at a time, same files and order",
	"inputs":      "reset and failsafe requests (cmdline, button, console key), the A/B slot (preinit: none)",
	"devices":     "find the partitions by PARTLABEL",
	"gpt":         "read both GPT copies: grow to the disk, repair a cut primary or a stale backup (preinit: none)",
	"root":        "mount the squashfs at /rom (with verity: check every block first)",
	"data":        "probe the data partition (blank? ext4?), mount it, pending factory reset, grow the ext4, reserve; preinit: mount only",
	"overlay":     "mkdir upper and work, mount the overlay",
	"upkeep":      "record the upper's build, start the trash collector, note the ext4 error count (preinit: none)",
	"move":        "move /rom, /overlay, /dev, /proc, /sys, /run into the new root",
	"state":       "write /run/ovroot/state; trial helpers (preinit: none)",
	"logs":        "root ready and peak memory lines on the serial console (preinit: none)",
	"switch_root": "switch_root (delete the initramfs, chroot) and exec the real init",
}

var (
	reTraceMark = regexp.MustCompile(`bench-dmesg: \[\s*([0-9.]+)\] (?:ovroot|preinit): trace: (\S+)`)
	reRunInitTS = regexp.MustCompile(`bench-dmesg: \[\s*([0-9.]+)\] Run /init as init process`)
	reRealTS    = regexp.MustCompile(`bench-dmesg: \[\s*([0-9.]+)\] ` + regexp.QuoteMeta(markerReal))
)

// parseTimeline reads one boot's steps from its console.
func parseTimeline(console string) ([]step, error) {
	a, z := reRunInitTS.FindStringSubmatch(console), reRealTS.FindStringSubmatch(console)
	if a == nil || z == nil {
		return nil, fmt.Errorf("timeline: no kernel timestamps of `Run /init` and %q on the console", markerReal)
	}
	prev, _ := strconv.ParseFloat(a[1], 64)
	end, _ := strconv.ParseFloat(z[1], 64)
	var steps []step
	for _, m := range reTraceMark.FindAllStringSubmatch(console, -1) {
		ts, _ := strconv.ParseFloat(m[1], 64)
		steps = append(steps, step{m[2], ts - prev})
		prev = ts
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("timeline: no trace marks on the console (ovroot.trace, preinit's echo)")
	}
	return append(steps, step{"switch_root", end - prev}), nil
}

// medianTimeline is each step's median over boots, in the first boot's
// order (every boot of one kind has the same steps).
func medianTimeline(boots [][]step) []step {
	if len(boots) == 0 {
		return nil
	}
	var out []step
	for i, s := range boots[0] {
		var v []float64
		for _, b := range boots {
			if i < len(b) && b[i].name == s.name {
				v = append(v, b[i].dur)
			}
		}
		slices.Sort(v)
		out = append(out, step{s.name, v[len(v)/2]})
	}
	return out
}

// timelines are the median hand-over timelines of both kinds of boot.
type timelines struct {
	ovroot, preinit []step
	boots           int
}

func total(steps []step) float64 {
	var t float64
	for _, s := range steps {
		t += s.dur
	}
	return t
}

// table is the timeline as a markdown table, ovroot's steps in order with
// the preinit's same-named step beside each.
func (tl timelines) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Hand-over timeline (ms, median of %d boots each; `ovroot.trace` marks and the preinit's, kernel timestamps; a step ends at its mark):\n\n", tl.boots)
	fmt.Fprintln(&b, "| step | ovroot | preinit | what |")
	fmt.Fprintln(&b, "| --- | --- | --- | --- |")
	pre := map[string]float64{}
	for _, s := range tl.preinit {
		pre[s.name] = s.dur
	}
	for _, s := range tl.ovroot {
		p := "—"
		if v, ok := pre[s.name]; ok {
			p = fmt.Sprintf("%.0f", v*1000)
		}
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s |\n", s.name, s.dur*1000, p, stepWhat[s.name])
	}
	fmt.Fprintf(&b, "| sum of medians | %.0f | %.0f | |\n", total(tl.ovroot)*1000, total(tl.preinit)*1000)
	return b.String()
}

// stepColors are the bars' colours, by step.
var stepColors = map[string]string{
	"start": "#8da0cb", "config": "#e5c494", "modules": "#66c2a5", "inputs": "#ffd92f",
	"devices": "#fc8d62", "gpt": "#e78ac3", "root": "#a6d854", "data": "#b3b3b3",
	"overlay": "#1b9e77", "upkeep": "#d95f02", "move": "#7570b3", "state": "#e7298a",
	"logs": "#66a61e", "switch_root": "#a6761d",
}

// svg draws both timelines as bars on one time axis, bootchart-like: one
// row per kind of boot, one box per step, named when it is wide enough,
// and a legend of every step.
func (tl timelines) svg() string {
	const left, width, barH, gap = 90.0, 800.0, 34.0, 18.0
	longest := max(total(tl.ovroot), total(tl.preinit))
	if longest <= 0 {
		longest = 1
	}
	scale := width / longest
	var b strings.Builder
	height := 40 + 2*(barH+gap) + 40 + 18*float64((len(stepWhat)+3)/4)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", left+width+20, height)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="13">Hand-over, Run /init to the real init (median of %d boots each, ms)</text>`+"\n", tl.boots)
	y := 40.0
	for _, row := range []struct {
		name  string
		steps []step
	}{{"ovroot", tl.ovroot}, {"preinit", tl.preinit}} {
		fmt.Fprintf(&b, `<text x="10" y="%.0f">%s %.0f</text>`+"\n", y+barH/2+4, row.name, total(row.steps)*1000)
		x := left
		for _, s := range row.steps {
			w := s.dur * scale
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s" stroke="#fff"><title>%s %.0f ms</title></rect>`+"\n", x, y, w, barH, stepColors[s.name], s.name, s.dur*1000)
			if w > 46 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.0f">%s</text><text x="%.1f" y="%.0f">%.0f</text>`+"\n", x+3, y+14, s.name, x+3, y+28, s.dur*1000)
			}
			x += w
		}
		y += barH + gap
	}
	for ms := 0.0; ms <= longest*1000; ms += 100 {
		x := left + ms/1000*scale
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#999"/><text x="%.1f" y="%.0f" text-anchor="middle" fill="#666">%.0f</text>`+"\n", x, y-6, x, y, x, y+10, ms)
	}
	y += 30
	var names []string
	for _, s := range tl.ovroot {
		names = append(names, s.name)
	}
	for i, n := range names {
		x, yy := left+float64(i%4)*200, y+float64(i/4)*18
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", x, yy-10, stepColors[n], x+16, yy, n)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
