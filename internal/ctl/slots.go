package ctl

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
	"github.com/ovroot/ovroot/slot"
)

// system is the device as package slot sees it.
func (c Context) system() *slot.System {
	m := c.Mounter
	if m == nil {
		m = slot.LinuxMounter{}
	}
	return &slot.System{Root: c.Root, Mounter: m, Progress: c.Stderr, Now: c.Now}
}

// upgrade writes an update bundle to the slot not running and makes the
// next boot try it.
func (c Context) upgrade(ctx context.Context, args []string) error {
	fs, _ := c.flags("upgrade", "ovrootctl upgrade /tmp/new.bundle --reboot\n         ovrootctl upgrade https://updates.example.com/router/3.bundle --progress=json\n         ovrootctl upgrade oci://ghcr.io/acme/router:3")
	progress := fs.String("progress", "text", "text: lines on stderr; json: one {\"pass\",\"done\",\"total\",\"resumes\"} object a line on stderr, for a program to read")
	wipe := fs.Bool("wipe", false, "also erase every change at the next boot (a factory reset; the keep-list is honoured)")
	reboot := fs.Bool("reboot", false, "reboot into the new slot when done")
	downgrade := fs.Bool("allow-downgrade", false, "install a bundle older than the running root or the highest version confirmed (only if the image was built with [update] allow_downgrade = true)")
	stall := fs.Duration("stall", 30*time.Second, "a download that gets no byte for `DURATION` is dropped and resumed (URLs)")
	retries := fs.Int("retries", 8, "`N` resumes and retries of a download before upgrade gives up, 0 for none (URLs)")
	if err := fs.Parse(reorder(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("upgrade: give one bundle (a file, a block device or a URL), e.g. ovrootctl upgrade /tmp/new.bundle")
	}
	if *stall <= 0 || *retries < 0 {
		return fmt.Errorf("upgrade: --stall %v --retries %d: want a duration above 0 and a number of retries of 0 or more", *stall, *retries)
	}
	c.NetStall, c.NetRetries = *stall, *retries
	if *retries == 0 {
		c.NetRetries = -1 // netfetch: negative is none
	}
	if *progress != "text" && *progress != "json" {
		return fmt.Errorf("upgrade: --progress=%s: want text or json", *progress)
	}
	st, err := c.readState()
	if err != nil {
		return err
	}
	if *wipe && st.Mode != layout.ModePersistent {
		return fmt.Errorf("upgrade --wipe: the data partition is not in use (%s): a factory reset request could not be stored", st.Mode)
	}
	sys := c.system()
	pol, err := sys.Policy()
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	p := &progressReporter{w: c.Stderr, json: *progress == "json", what: fs.Arg(0)}
	if p.json {
		sys.Progress = nil // the JSON lines replace the text ones
	}
	src, err := c.bundleSource(ctx, fs.Arg(0), pol.UpdatePolicy, p)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	res, err := sys.UpgradeFrom(src, slot.UpgradeOptions{AllowDowngrade: *downgrade})
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	fmt.Fprintf(c.Stdout, "upgrade: version %s, %s\n", res.Version, signedBy(res.Signer))
	if res.Warning != "" {
		fmt.Fprintf(c.Stderr, "ovrootctl: warning: %s\n", res.Warning)
	}
	fmt.Fprintf(c.Stdout, "upgrade: slot %s holds build %s (generation %d); the next boot tries it (%d tries)\n", res.Slot, res.BuildID, res.Generation, res.Tries)
	fmt.Fprintf(c.Stdout, "confirm it from the new system with `ovrootctl mark-good`; unconfirmed, the device goes back to slot %s by itself\n", res.Slot.Other())
	if *wipe {
		now := time.Now()
		if c.Now != nil {
			now = c.Now()
		}
		if err := reset.Schedule(c.path(layout.OverlayDir), reset.TriggerCtl, now); err != nil {
			return fmt.Errorf("upgrade --wipe: the slot is written, but the factory reset could not be scheduled: %w", err)
		}
		fmt.Fprintln(c.Stdout, "factory reset scheduled for the next boot (ovrootctl factory-reset --cancel withdraws it)")
	}
	if !*reboot {
		return nil
	}
	return c.reboot()
}

func signedBy(id string) string {
	if id == "" {
		return "NOT SIGNED (this image allows unsigned bundles)"
	}
	return "signed by trusted key " + id
}

// verify checks a bundle as upgrade would and changes nothing.
func (c Context) verify(args []string) error {
	fs, _ := c.flags("verify", "ovrootctl verify /tmp/new.bundle")
	if err := fs.Parse(reorder(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("verify: give one bundle (a file or a block device), e.g. ovrootctl verify /tmp/new.bundle")
	}
	res, err := c.system().Verify(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	fmt.Fprintf(c.Stdout, "verify: %s: version %s, build %s, %s; every member matches its checksum\n", fs.Arg(0), res.Manifest.Version, res.Manifest.BuildID, signedBy(res.Signer))
	if res.Refusal != "" {
		fmt.Fprintf(c.Stdout, "verify: but upgrade would refuse it: %s\n", res.Refusal)
		return fmt.Errorf("verify: %s would not be installed: %s", fs.Arg(0), res.Refusal)
	}
	fmt.Fprintln(c.Stdout, "verify: ovrootctl upgrade would install it")
	return nil
}

// updateStatus is the update policy in status --json.
type updateStatus struct {
	Version        string   `json:"version"`
	Highest        string   `json:"highest_confirmed,omitempty"`
	TrustedKeys    []string `json:"trusted_keys"`
	AllowUnsigned  bool     `json:"allow_unsigned"`
	AllowDowngrade bool     `json:"allow_downgrade"`
}

func newUpdateStatus(p *slot.Policy) *updateStatus {
	if p == nil {
		return nil
	}
	u := &updateStatus{Version: p.Version, Highest: p.Highest, TrustedKeys: []string{}, AllowUnsigned: p.AllowUnsigned, AllowDowngrade: p.AllowDowngrade}
	for _, k := range p.Trust.Keys {
		u.TrustedKeys = append(u.TrustedKeys, k.ID()+" "+filepath.Base(k.Name))
	}
	return u
}

// updateLines are the update policy lines of ovrootctl status.
func updateLines(p slot.Policy, err error) []string {
	if err != nil {
		return []string{fmt.Sprintf("updates:   cannot read the update policy: %v", err)}
	}
	v := p.Version
	if v == "" {
		v = "unknown (built before versioned bundles)"
	}
	h := p.Highest
	if h == "" {
		h = "none recorded yet"
	}
	out := []string{fmt.Sprintf("version:   %s running; highest confirmed %s", v, h)}
	u := newUpdateStatus(&p)
	keys := strings.Join(u.TrustedKeys, ", ")
	if keys == "" {
		keys = "none"
	}
	out = append(out, "trusts:    "+keys)
	if p.AllowUnsigned {
		out = append(out, "updates:   UNSIGNED BUNDLES ALLOWED (development image: [update] allow_unsigned)")
	} else if len(p.Trust.Keys) == 0 {
		out = append(out, "updates:   every bundle is refused: this image trusts no key")
	}
	if p.AllowDowngrade {
		out = append(out, "updates:   downgrades allowed with --allow-downgrade")
	}
	if p.HighestNote != "" {
		out = append(out, "warning:   "+p.HighestNote)
	}
	return out
}

// healthLine is status's line about this boot's health checks.
func healthLine(h *slot.HealthResult, err error) string {
	switch {
	case err != nil:
		return fmt.Sprintf("health:    cannot read the last result: %v", err)
	case h == nil:
		return ""
	}
	return fmt.Sprintf("health:    %s (%s)", h.Summary(), h.Time.Format(time.RFC3339))
}

// markGood confirms the running slot.
func (c Context) markGood(args []string) error {
	fs, _ := c.flags("mark-good", "ovrootctl mark-good")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := c.system().MarkGood()
	if res.Health != "" {
		fmt.Fprintf(c.Stdout, "health: %s\n", res.Health)
	}
	if err != nil {
		return fmt.Errorf("mark-good: %w", err)
	}
	if res.Warning != "" {
		fmt.Fprintf(c.Stderr, "ovrootctl: warning: %s\n", res.Warning)
	}
	if res.From == "" {
		fmt.Fprintf(c.Stdout, "slot %s (build %s) is confirmed already\n", res.Slot, res.BuildID)
		return nil
	}
	fmt.Fprintf(c.Stdout, "slot %s (build %s) confirmed: %s is now %s\n", res.Slot, res.BuildID, res.From, res.Entry)
	return nil
}

// reorder puts flags (with their values) before the positional arguments,
// which follow a "--" (flag stops at the first of those): `upgrade FILE
// --reboot` and `upgrade URL --stall 2s` work as written.
func reorder(fs *flag.FlagSet, args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		if a == "--" { // the rest are arguments, whatever they look like
			rest = append(rest, args[i+1:]...)
			break
		}
		flags = append(flags, a)
		// A flag that takes a value and has none after "=" takes the
		// next argument: --stall 2s, --progress json.
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil && i+1 < len(args) {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	if len(rest) == 0 {
		return flags
	}
	return append(append(flags, "--"), rest...)
}

// slotLines are the A/B lines of ovrootctl status.
func slotLines(st layout.State, slots []slot.SlotInfo, slotsErr error) []string {
	s := st.Slot
	if s == nil {
		return nil
	}
	var out []string
	l := fmt.Sprintf("slot:      %s, build %s", s.Slot, s.BuildID)
	confirmedSince := false // mark-good or confirm_after during this boot
	for _, i := range slots {
		if i.Running && i.State == slot.StateConfirmed && s.Trial != nil {
			confirmedSince = true
		}
	}
	if confirmedSince {
		l += ", confirmed (this boot started as a trial)"
	} else if s.Trial != nil {
		l += fmt.Sprintf(", ON TRIAL (%d tries left): confirm with `ovrootctl mark-good`", s.Trial.Left)
	} else {
		l += ", confirmed"
	}
	out = append(out, l)
	if s.UpperOtherBuild {
		out = append(out, fmt.Sprintf("upper:     made on build %s, another build than this root's: files changed there hide this build's", s.UpperBuild))
	} else if s.UpperBuild != "" {
		out = append(out, fmt.Sprintf("upper:     made on build %s", s.UpperBuild))
	}
	if slotsErr != nil {
		out = append(out, fmt.Sprintf("slots:     cannot read the boot entries: %v", slotsErr))
	}
	for _, i := range slots {
		out = append(out, "  "+i.Line())
	}
	return out
}
