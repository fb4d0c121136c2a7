package bench

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The build timeline: `ovroot build --trace` prints "trace: STEP N ms" at
// the end of each step (imagebuild's Options.Trace); the bench's timed
// builds run with it, and the table is the median of each step.

// buildStepWhat says what each build step does, and whether plain
// mksquashfs does it too.
var buildStepWhat = map[string]string{
	"start":     "",
	"checks":    "start-up, flags, the kernel, the module index (cached), the rootfs's init, the loader and e2fsck found (mksquashfs: none)",
	"programs":  "the device programs (init, ovrootctl) from the compile cache (mksquashfs: none)",
	"squashfs":  "mksquashfs of the rootfs and ovrootctl, the initramfs made beside it (mksquashfs: the rootfs only)",
	"initramfs": "waiting for the initramfs, when mksquashfs was done first (mksquashfs: none)",
	"hash":      "sha256 of kernel, initramfs and squashfs: the image's reproducible GUIDs (mksquashfs: none)",
	"boot":      "GPT and the FAT boot partition: kernel, initramfs, loader and its entries (mksquashfs: none)",
	"root":      "the squashfs copied into its partition (mksquashfs: none)",
	"sync":      "fsync of the image before it is renamed into place (mksquashfs: none; it does not sync)",
	"rename":    "rename into place (mksquashfs: none)",
}

var reBuildTrace = regexp.MustCompile(`(?m)^ovroot: trace: (\S+) (\d+) ms$`)

// buildSteps reads the steps of one traced build's output, in order.
func buildSteps(out string) ([]step, error) {
	var steps []step
	for _, m := range reBuildTrace.FindAllStringSubmatch(out, -1) {
		ms, err := strconv.Atoi(m[2])
		if err != nil {
			return nil, err
		}
		if m[1] == "start" {
			continue
		}
		steps = append(steps, step{m[1], float64(ms) / 1000})
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("no trace lines in the build's output:\n%s", out)
	}
	return steps, nil
}

// buildTimeline is the median of each step over the traced builds of one
// tree, against the plain mksquashfs of the same tree.
type buildTimeline struct {
	tree  string
	steps []step // medians
	plain time.Duration
	n     int
}

// buildStepsTable is the timelines side by side, one column per tree.
func buildStepsTable(tls []buildTimeline) string {
	if len(tls) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Build timeline (ms, median of each step over the timed builds; `ovroot build --trace`):\n\n| step |")
	for _, tl := range tls {
		fmt.Fprintf(&b, " %s (%d builds) |", tl.tree, tl.n)
	}
	fmt.Fprintln(&b, " what |")
	fmt.Fprint(&b, "| --- |", strings.Repeat(" --- |", len(tls)), " --- |\n")
	for i, s := range tls[0].steps {
		fmt.Fprintf(&b, "| %s |", s.name)
		for _, tl := range tls {
			v := "—"
			if i < len(tl.steps) && tl.steps[i].name == s.name {
				v = fmt.Sprintf("%.0f", tl.steps[i].dur*1000)
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		fmt.Fprintf(&b, " %s |\n", buildStepWhat[s.name])
	}
	fmt.Fprint(&b, "| sum of medians |")
	for _, tl := range tls {
		fmt.Fprintf(&b, " %.0f |", total(tl.steps)*1000)
	}
	fmt.Fprintln(&b, " |")
	fmt.Fprint(&b, "| plain mksquashfs (median) |")
	for _, tl := range tls {
		fmt.Fprintf(&b, " %.0f |", tl.plain.Seconds()*1000)
	}
	fmt.Fprintln(&b, " the baseline |")
	return b.String()
}
