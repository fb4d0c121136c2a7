// Package docpic draws docs/overview.svg, the README's picture of an
// ovroot disk and its boot, from the names package layout defines (the
// partition labels, mount points and file names the code uses), so the
// picture cannot say what the code does not. TestOverviewCurrent keeps
// the committed file equal to Overview(); `go test ./internal/docpic
// -update` rewrites it.
package docpic

import (
	"fmt"
	"html"
	"strings"

	"github.com/ovroot/ovroot/layout"
)

const (
	width  = 960
	height = 600
	font   = `font-family="DejaVu Sans, Helvetica, Arial, sans-serif"`
)

// svg accumulates elements.
type svg struct{ b strings.Builder }

func (s *svg) f(format string, args ...any) { fmt.Fprintf(&s.b, format+"\n", args...) }

// box draws a rounded box with a bold title and lines of text under it.
func (s *svg) box(x, y, w, h int, fill, title string, lines ...string) {
	s.f(`<rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="%s" stroke="#37474f" stroke-width="1.2"/>`, x, y, w, h, fill)
	s.f(`<text x="%d" y="%d" font-size="14" font-weight="bold" fill="#102027">%s</text>`, x+10, y+20, html.EscapeString(title))
	for i, l := range lines {
		s.f(`<text x="%d" y="%d" font-size="12" fill="#263238" xml:space="preserve">%s</text>`, x+10, y+38+i*16, html.EscapeString(l))
	}
}

// arrow draws a line from (x1,y1) to (x2,y2) ending in the arrowhead.
func (s *svg) arrow(x1, y1, x2, y2 int) {
	s.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#37474f" stroke-width="1.6" marker-end="url(#head)"/>`, x1, y1, x2, y2)
}

func (s *svg) text(x, y, size int, weight, txt string) {
	s.f(`<text x="%d" y="%d" font-size="%d" font-weight="%s" fill="#102027">%s</text>`, x, y, size, weight, html.EscapeString(txt))
}

// Colours: the read-only factory parts blue, the writable parts green,
// boot machinery grey, ovroot's init amber.
const (
	roFill   = "#bbdefb"
	rwFill   = "#c8e6c9"
	bootFill = "#eceff1"
	initFill = "#ffe0b2"
)

// Overview is the SVG of the disk (left) and the boot (right).
func Overview() []byte {
	var s svg
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s>`, width, height, width, height, font)
	s.f(`<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#37474f"/></marker></defs>`)
	s.f(`<rect width="%d" height="%d" fill="#ffffff"/>`, width, height)
	s.text(20, 34, 20, "bold", "ovroot: the disk, and how it boots")

	// The disk: GPT partitions top to bottom, as on the disk.
	s.text(20, 70, 15, "bold", "The disk (GPT, in this order; found by PARTLABEL)")
	x, w := 20, 400
	s.box(x, 84, w, 84, bootFill, layout.BootLabel+"  (FAT32, EFI System Partition)",
		layout.KernelFile+", "+layout.InitrdFile+" (ovroot's init + modules)",
		layout.BootInfoFile+": arch, command line, build",
		"the loader: systemd-boot (UEFI) or boot.scr (U-Boot)")
	s.box(x, 178, w, 66, roFill, layout.RootLabel+"  (squashfs, read-only)",
		"the factory root, as built; never written",
		"two slots: "+layout.RootLabel+"_a and "+layout.RootLabel+"_b, one on trial")
	s.box(x, 254, w, 84, rwFill, layout.DataLabel+"  (ext4, the last partition)",
		"blank in the image: formatted at first boot,",
		"grown to the disk; "+layout.UpperName+"/ holds every change,",
		layout.WorkName+"/ is overlayfs's, .ovroot/ the reset state")

	// On the device: the overlay root.
	s.text(20, 376, 15, "bold", "On the device")
	s.box(x, 390, w, 50, roFill, layout.RomDir, "the squashfs, read-only (the lower layer)")
	s.box(x, 450, w, 50, rwFill, layout.OverlayDir, "the data partition: "+layout.OverlayDir+"/"+layout.UpperName+" is the upper layer")
	s.box(x, 510, w, 66, "#e1bee7", "/  (overlayfs)",
		"lowerdir="+layout.RomDir+", upperdir="+layout.OverlayDir+"/"+layout.UpperName,
		"factory reset: empty the upper, keep the squashfs")
	s.arrow(x+w+14, 415, x+w+14, 540)
	s.arrow(x+w+14, 475, x+w+14, 540)
	s.f(`<line x1="%d" y1="415" x2="%d" y2="415" stroke="#37474f" stroke-width="1.6"/>`, x+w, x+w+14)
	s.f(`<line x1="%d" y1="475" x2="%d" y2="475" stroke="#37474f" stroke-width="1.6"/>`, x+w, x+w+14)
	s.f(`<line x1="%d" y1="543" x2="%d" y2="543" stroke="#37474f" stroke-width="1.6"/>`, x+w+14, x+w)

	// The boot, top to bottom.
	s.text(500, 70, 15, "bold", "The boot")
	bx, bw := 500, 440
	steps := []struct {
		h           int
		fill, title string
		lines       []string
	}{
		{50, bootFill, "firmware", []string{"UEFI (OVMF, AAVMF, a board's) or U-Boot"}},
		{66, bootFill, "loader", []string{"picks the slot: the newest, or the confirmed one", "when the one on trial used up its tries"}},
		{50, bootFill, "Linux", []string{"the slot's " + layout.KernelFile + " with its " + layout.InitrdFile}},
		{212, initFill, "ovroot's init (PID 1 of the initramfs)", []string{
			"1  load the image's kernel modules",
			"2  find the partitions by PARTLABEL",
			"3  mount the squashfs at " + layout.RomDir + ", read-only",
			"4  mount the data partition at " + layout.OverlayDir + ":",
			"    format it when blank, grow it, repair it (e2fsck,",
			"    rolled back if the repair fails), else a RAM upper",
			"5  a pending factory reset: done, crash-safely",
			"6  stack the overlay root, record the boot",
			"7  switch_root",
			"   errors: on the console and /dev/kmsg (ovroot:), then a fallback",
		}},
		{50, roFill, "the root's own /sbin/init", []string{"your system, on the overlay root"}},
	}
	y := 84
	for i, st := range steps {
		s.box(bx, y, bw, st.h, st.fill, st.title, st.lines...)
		if i < len(steps)-1 {
			s.arrow(bx+bw/2, y+st.h, bx+bw/2, y+st.h+14)
		}
		y += st.h + 14
	}
	s.f(`</svg>`)
	return []byte(s.b.String())
}
