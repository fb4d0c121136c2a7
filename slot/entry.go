// Package slot is the A/B root slot scheme shared by the host tool, the
// init and ovrootctl: the names and text of the boot entries on the boot
// partition (systemd-boot's boot counting) and the update bundle format.
// The pure parts (this file, bundle.go) import only the standard library
// and layout, so the host and ovrootctl link nothing they do not need.
package slot

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/ovroot/ovroot/layout"
)

// EntryPrefix starts every entry file name of the scheme; loader.conf's
// default pattern is EntryPrefix + "*".
const EntryPrefix = "ovroot-"

// DefaultPattern is loader.conf's default for a two-slot image:
// systemd-boot boots the first entry matching it in its sort order, which
// puts entries with no tries left last, then orders by sort-key and by
// version, highest first. So the newest slot with tries left boots, and an
// abandoned trial slot (+0) gives way to the other.
const DefaultPattern = EntryPrefix + "*"

// SortKey is the sort-key of every entry of the scheme.
const SortKey = "ovroot"

// Name is an entry file name, parsed.
//
//	ovroot-b.conf       confirmed (no counter)
//	ovroot-b+3.conf     on trial, 3 boots left, none done
//	ovroot-b+2-1.conf   on trial, 2 left, 1 done (renamed by the loader at boot)
//	ovroot-b+0-3.conf   abandoned: no tries left
type Name struct {
	Slot    layout.Slot
	Counted bool // has a +LEFT[-DONE] counter: on trial (or abandoned when Left is 0)
	Left    int
	Done    int
}

// FileName is the entry's file name (no directory).
func (n Name) FileName() string {
	s := EntryPrefix + string(n.Slot)
	if n.Counted {
		s += "+" + strconv.Itoa(n.Left)
		if n.Done > 0 {
			s += "-" + strconv.Itoa(n.Done)
		}
	}
	return s + ".conf"
}

// ID is the entry's id as systemd-boot reports it (LoaderEntrySelected):
// the file name without the counter.
func (n Name) ID() string { return EntryPrefix + string(n.Slot) + ".conf" }

// Abandoned reports a trial entry with no tries left.
func (n Name) Abandoned() bool { return n.Counted && n.Left == 0 }

// ParseName parses an entry file name of the scheme; ok is false for any
// other file (another OS's entry, a temporary file).
func ParseName(file string) (n Name, ok bool) {
	rest, found := strings.CutPrefix(file, EntryPrefix)
	if !found {
		return n, false
	}
	rest, found = strings.CutSuffix(rest, ".conf")
	if !found || rest == "" {
		return n, false
	}
	n.Slot = layout.Slot(rest[:1])
	if !n.Slot.Valid() {
		return n, false
	}
	rest = rest[1:]
	if rest == "" {
		return n, true
	}
	counter, found := strings.CutPrefix(rest, "+")
	if !found {
		return n, false
	}
	left, done, hasDone := strings.Cut(counter, "-")
	var err error
	if n.Left, err = atoiStrict(left); err != nil {
		return n, false
	}
	if hasDone {
		if n.Done, err = atoiStrict(done); err != nil {
			return n, false
		}
	}
	n.Counted = true
	return n, true
}

func atoiStrict(s string) (int, error) {
	if s == "" || len(s) > 6 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a counter: %q", s)
	}
	return strconv.Atoi(s)
}

// Entry is what a slot's boot entry says.
type Entry struct {
	Slot       layout.Slot
	Generation int    // the entry's version: higher boots first
	BuildID    string // of the slot's root
	// Options is the image's kernel command line as built, without the
	// parameters Text adds.
	Options string
	Loader  layout.Loader
	Release string // kernel release, for the title
}

// Text is the entry as a Boot Loader Spec type #1 file. Its options are
// the image's command line, then ovroot.loader=, ovroot.slot=,
// ovroot.build=, and panic=5 unless the command line sets panic=: a
// trial boot whose init dies must reboot for the loader to count it.
func (e Entry) Text() string {
	var b strings.Builder
	title := fmt.Sprintf("ovroot slot %s (build %s)", e.Slot, e.BuildID)
	if e.Release != "" {
		title += ", Linux " + e.Release
	}
	fmt.Fprintf(&b, "title %s\n", title)
	fmt.Fprintf(&b, "sort-key %s\n", SortKey)
	fmt.Fprintf(&b, "version %d\n", e.Generation)
	fmt.Fprintf(&b, "linux /%s/%s\n", e.Slot.Dir(), layout.KernelFile)
	fmt.Fprintf(&b, "initrd /%s/%s\n", e.Slot.Dir(), layout.InitrdFile)
	fmt.Fprintf(&b, "options %s\n", e.KernelCmdline())
	return b.String()
}

// KernelCmdline is the command line the entry gives the kernel.
func (e Entry) KernelCmdline() string {
	params := []string{}
	if o := strings.TrimSpace(e.Options); o != "" {
		params = append(params, o)
	}
	if e.Loader != "" {
		params = append(params, layout.LoaderParam+"="+string(e.Loader))
	}
	params = append(params, layout.SlotParam+"="+string(e.Slot), layout.BuildParam+"="+e.BuildID)
	if !hasParam(e.Options, "panic") {
		params = append(params, "panic=5")
	}
	return strings.Join(params, " ")
}

func hasParam(cmdline, key string) bool {
	for _, f := range strings.Fields(cmdline) {
		if k, _, _ := strings.Cut(f, "="); k == key {
			return true
		}
	}
	return false
}

// ParseEntry reads back what Text wrote: the generation (version), and
// slot and build id from the options. Unknown keys are ignored.
func ParseEntry(text string) (Entry, error) {
	var e Entry
	haveVersion := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		v = strings.TrimSpace(v)
		switch k {
		case "version":
			g, err := strconv.Atoi(v)
			if err != nil {
				return e, fmt.Errorf("version %q is not a generation number", v)
			}
			e.Generation, haveVersion = g, true
		case "options":
			opts := parseOptions(v)
			e.Slot, e.BuildID, e.Loader, e.Options = opts.Slot, opts.BuildID, opts.Loader, opts.Options
		}
	}
	if !haveVersion {
		return e, fmt.Errorf("no version line")
	}
	if !e.Slot.Valid() {
		return e, fmt.Errorf("options name no slot (%s=a or b)", layout.SlotParam)
	}
	return e, nil
}

// parseOptions splits a command line KernelCmdline made back into the
// slot, build id, loader and the image's own options.
func parseOptions(cmdline string) Entry {
	var e Entry
	var rest []string
	fields := strings.Fields(cmdline)
	// The panic=5 KernelCmdline adds comes right after ovroot.build=.
	if n := len(fields); n >= 2 && fields[n-1] == "panic=5" && strings.HasPrefix(fields[n-2], layout.BuildParam+"=") {
		fields = fields[:n-1]
	}
	for _, f := range fields {
		pk, pv, _ := strings.Cut(f, "=")
		switch pk {
		case layout.SlotParam:
			e.Slot = layout.Slot(pv)
		case layout.BuildParam:
			e.BuildID = pv
		case layout.LoaderParam:
			e.Loader = layout.Loader(pv)
		default:
			rest = append(rest, f)
		}
	}
	e.Options = strings.Join(rest, " ")
	return e
}

// BuildID is the build id of a root: the first 8 bytes of its squashfs's
// SHA-256, in hex.
func BuildID(sha256sum []byte) string { return hex.EncodeToString(sha256sum[:8]) }

// BuildIDOf hashes data (tests, small roots).
func BuildIDOf(data []byte) string { s := sha256.Sum256(data); return BuildID(s[:]) }
