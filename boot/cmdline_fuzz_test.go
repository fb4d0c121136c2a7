package boot

import (
	"strings"
	"testing"
)

// FuzzParseCmdline: whatever the loader passes, the init's command-line
// reader returns, and what it takes is within its bounds: a slot it knows,
// a build id in lower-case hex, an absolute init, DONE <= TRIES. A value it
// refuses is a problem line naming the parameter, never a panic.
func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"console=ttyS0 panic=-1 ovroot.slot=b ovroot.build=0123456789abcdef ovroot.try=2/0x3",
		"init=/bin/sh rootwait rootdelay=3 ovroot.reset ovroot.failsafe=0",
		`a="b c" ovroot.reset_step_delay=300ms ovroot.slot=c init=sbin/x`,
		"ovroot.try=4/0x3 ovroot.build=XYZ rootdelay=-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, problems := parseCmdline(s)
		if c.Slot != "" && !c.Slot.Valid() {
			t.Fatalf("parseCmdline(%q): slot %q", s, c.Slot)
		}
		if c.BuildID != "" && strings.Trim(c.BuildID, "0123456789abcdef") != "" {
			t.Fatalf("parseCmdline(%q): build id %q", s, c.BuildID)
		}
		if c.Init != "" && !strings.HasPrefix(c.Init, "/") {
			t.Fatalf("parseCmdline(%q): init %q", s, c.Init)
		}
		if c.TryOf != 0 && (c.TryDone < 1 || c.TryDone > c.TryOf) {
			t.Fatalf("parseCmdline(%q): try %d/%d", s, c.TryDone, c.TryOf)
		}
		if c.RootDelay < 0 || c.ResetStepDelay < 0 {
			t.Fatalf("parseCmdline(%q): negative delay", s)
		}
		for _, p := range problems {
			if !strings.Contains(p, "=") {
				t.Fatalf("problem %q names no parameter", p)
			}
		}
		// Splitting is stable: what it returns, joined by spaces, splits
		// into the same arguments when none holds a quote or a space.
		args := splitCmdline(s)
		plain := true
		for _, a := range args {
			if a == "" || strings.ContainsAny(a, " \t\n\"") {
				plain = false
			}
		}
		if plain {
			if again := splitCmdline(strings.Join(args, " ")); strings.Join(again, "\x00") != strings.Join(args, "\x00") {
				t.Fatalf("splitCmdline(%q) = %q, but splitting them joined gives %q", s, args, again)
			}
		}
	})
}
