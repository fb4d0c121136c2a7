package ctl

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
	"golang.org/x/sys/unix"
)

// factoryReset schedules (or cancels) a factory reset for the next boot.
func (c Context) factoryReset(args []string) error {
	fs, _ := c.flags("factory-reset", "ovrootctl factory-reset --reboot")
	cancel := fs.Bool("cancel", false, "withdraw a pending request")
	reboot := fs.Bool("reboot", false, "reboot now, so the reset happens at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := c.readState()
	if err != nil {
		return err
	}
	if st.Mode != layout.ModePersistent {
		return fmt.Errorf("the data partition is not in use (%s: %s): there is nothing to reset, and a request could not be stored", strings.ToUpper(string(st.Mode)), st.Reason)
	}
	dir := c.path(layout.OverlayDir)
	if *cancel {
		p, err := reset.Pending(dir)
		if err != nil {
			return err
		}
		had, err := reset.Cancel(dir)
		if err != nil {
			return fmt.Errorf("cancel the factory reset: %w", err)
		}
		if had && p != nil && p.Restore != "" {
			fmt.Fprintln(c.Stdout, "restore cancelled")
		} else if had {
			fmt.Fprintln(c.Stdout, "factory reset cancelled")
		} else {
			fmt.Fprintln(c.Stdout, "no factory reset was pending")
		}
		return nil
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	if err := reset.Schedule(dir, reset.TriggerCtl, now); err != nil {
		return fmt.Errorf("schedule the factory reset: %w", err)
	}
	fmt.Fprintln(c.Stdout, "factory reset scheduled: every change since the factory image is erased at the next boot")
	fmt.Fprintln(c.Stdout, "withdraw it with: ovrootctl factory-reset --cancel")
	if !*reboot {
		return nil
	}
	return c.reboot()
}

// reboot says so and reboots (c.Reboot in tests).
func (c Context) reboot() error {
	fmt.Fprintln(c.Stdout, "rebooting")
	if c.Reboot != nil {
		return c.Reboot()
	}
	return rebootSystem()
}

// rebootSystem asks the system's own reboot command for a clean shutdown;
// without one it syncs and reboots directly (the request is already on
// disk, and ext4's journal covers the rest).
func rebootSystem() error {
	if p, err := exec.LookPath("reboot"); err == nil {
		return exec.Command(p).Run()
	}
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

func (c Context) readState() (layout.State, error) {
	data, err := os.ReadFile(c.path(layout.StateFile))
	if err != nil {
		return layout.State{}, fmt.Errorf("no boot record (%w): was this system booted by ovroot's init?", err)
	}
	return layout.ParseState(data)
}

// resetStatus is what status says about factory resets.
type resetStatus struct {
	Pending *layout.ResetRequest `json:"reset_pending,omitempty"`
	Last    *layout.ResetRecord  `json:"last_reset,omitempty"`
}

func (c Context) readResetStatus(st layout.State) (resetStatus, error) {
	var rs resetStatus
	if st.Mode != layout.ModePersistent {
		return rs, nil
	}
	dir := c.path(layout.OverlayDir)
	var err error
	if rs.Pending, err = reset.Pending(dir); err != nil {
		return rs, err
	}
	rs.Last, err = reset.Last(dir)
	return rs, err
}

func (rs resetStatus) lines() []string {
	var out []string
	if p := rs.Pending; p != nil && p.Restore != "" {
		out = append(out, fmt.Sprintf("reset:     PENDING restore of a backup (%s, requested %s): replaces the upper at the next boot", layout.Meta(layout.OverlayDir, p.Restore), p.Time.Format(time.RFC3339)))
	} else if p != nil {
		out = append(out, fmt.Sprintf("reset:     PENDING factory reset (trigger=%s, requested %s): runs at the next boot", p.Trigger, p.Time.Format(time.RFC3339)))
	}
	if l := rs.Last; l != nil && l.Failed != "" {
		out = append(out, fmt.Sprintf("last reset: %s FAILED, nothing changed (trigger=%s): %s", l.DoneAt.Format(time.RFC3339), l.Trigger, l.Failed))
	} else if l != nil && l.Restored {
		out = append(out, fmt.Sprintf("last reset: %s restored a backup (%d ms)", l.DoneAt.Format(time.RFC3339), l.DurationMS))
	} else if l != nil {
		kept := "none"
		if len(l.Kept) > 0 {
			kept = strings.Join(l.Kept, ", ")
		}
		out = append(out, fmt.Sprintf("last reset: %s (trigger=%s, kept: %s, %d ms)", l.DoneAt.Format(time.RFC3339), l.Trigger, kept, l.DurationMS))
	}
	return out
}
