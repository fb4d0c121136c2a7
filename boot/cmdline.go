package boot

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
	"github.com/ovroot/ovroot/verity"
)

// Cmdline is what the init takes from the kernel command line.
type Cmdline struct {
	// Init overrides the program started after switch_root (init=).
	Init string
	// RootWait waits for the root partition without a time limit (rootwait).
	RootWait bool
	// RootDelay is slept before looking for partitions (rootdelay=, seconds).
	RootDelay time.Duration
	// Reset asks for a factory reset on this boot (ovroot.reset=1, or
	// ovroot.reset alone).
	Reset bool
	// ResetStepDelay slows each step of a factory reset down
	// (ovroot.reset_step_delay=300ms): a test aid, so a power cut can be
	// aimed at every moment of a reset that otherwise takes milliseconds.
	ResetStepDelay time.Duration
	// Failsafe boots the factory root with a RAM upper and the data
	// partition read-only (ovroot.failsafe=1).
	Failsafe bool
	// Trace logs a "trace: STEP" line to the kernel log at the end of
	// each boot step (ovroot.trace=1), for a timeline of the hand-over
	// from the kernel's timestamps (make bench).
	Trace bool
	// Slot is the root slot the boot entry names (ovroot.slot=a|b);
	// "" for a one-slot image.
	Slot layout.Slot
	// BuildID is the build id of that slot's root (ovroot.build=).
	BuildID string
	// TryDone and TryOf are ovroot.try=DONE/TRIES, which a U-Boot image's
	// boot script adds to a counted boot: this is try TryDone of TryOf.
	TryDone, TryOf int
	// Verity is the root's hash tree (ovroot.verity=); VerityErr why the
	// parameter that is there does not parse. A root whose parameter does
	// not parse is never mounted unchecked.
	Verity    *verity.Info
	VerityErr error
	// Params holds every parameter as given, last one wins (flags map to "").
	Params map[string]string
}

// ParseCmdline splits a kernel command line the way the kernel does
// (lib/cmdline.c next_arg: whitespace separates, double quotes group, the
// quotes themselves are dropped) and picks out what the init uses. Values
// that do not parse are reported in problems, one per parameter, and
// ignored, so a typo on the command line never stops a boot.
func parseCmdline(s string) (c Cmdline, problems []string) {
	c.Params = map[string]string{}
	for _, arg := range splitCmdline(s) {
		key, val, _ := strings.Cut(arg, "=")
		c.Params[key] = val
		switch key {
		case "init":
			if !strings.HasPrefix(val, "/") {
				problems = append(problems, fmt.Sprintf("init=%q: not an absolute path, ignored", val))
				continue
			}
			c.Init = val
		case "rootwait":
			c.RootWait = true
		case "rootdelay":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				problems = append(problems, fmt.Sprintf("rootdelay=%q: want a whole number of seconds, ignored", val))
				continue
			}
			c.RootDelay = time.Duration(n) * time.Second
		case "ovroot.reset":
			if p := parseFlag(key, val, &c.Reset); p != "" {
				problems = append(problems, p)
			}
		case "ovroot.failsafe":
			if p := parseFlag(key, val, &c.Failsafe); p != "" {
				problems = append(problems, p)
			}
		case "ovroot.trace":
			if p := parseFlag(key, val, &c.Trace); p != "" {
				problems = append(problems, p)
			}
		case layout.SlotParam:
			if sl := layout.Slot(val); sl.Valid() {
				c.Slot = sl
			} else {
				problems = append(problems, fmt.Sprintf("%s=%q: want a or b, ignored", key, val))
			}
		case layout.BuildParam:
			if val == "" || len(val) > 64 || strings.Trim(val, "0123456789abcdef") != "" {
				problems = append(problems, fmt.Sprintf("%s=%q: want a build id (lower-case hex), ignored", key, val))
				continue
			}
			c.BuildID = val
		case layout.TryParam:
			done, of, err := slot.ParseTry(val)
			if err != nil {
				problems = append(problems, err.Error()+", ignored")
				continue
			}
			c.TryDone, c.TryOf = done, of
		case verity.CmdlineParam:
			v, err := verity.ParseParam(val)
			c.Verity, c.VerityErr = nil, err
			if err == nil {
				c.Verity = &v
			}
		case "ovroot.reset_step_delay":
			d, err := time.ParseDuration(val)
			if err != nil || d < 0 || d > time.Minute {
				problems = append(problems, fmt.Sprintf("ovroot.reset_step_delay=%q: want a duration up to 1m, ignored", val))
				continue
			}
			c.ResetStepDelay = d
		}
	}
	return c, problems
}

// parseFlag reads an on/off parameter: given alone or as 1/y/yes/true/on
// it is on, as 0/n/no/false/off off; anything else leaves *dst alone and
// is returned as a problem.
func parseFlag(key, val string, dst *bool) (problem string) {
	switch strings.ToLower(val) {
	case "", "1", "y", "yes", "true", "on":
		*dst = true
	case "0", "n", "no", "false", "off":
		*dst = false
	default:
		return fmt.Sprintf("%s=%q: want 1 or 0, ignored", key, val)
	}
	return ""
}

func splitCmdline(s string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}
