// Package ctl is ovrootctl, the on-device tool: it reports what the init
// did at boot (status) and what the running system changed compared with
// the factory root (changes). It reads state; it mounts and formats nothing.
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// Context is one invocation of ovrootctl.
type Context struct {
	Stdout, Stderr io.Writer
	// Stdin is read by restore -; nil is os.Stdin.
	Stdin io.Reader
	Args  []string
	// Root prefixes every path read (tests use a temp dir); "" is "/".
	Root string
	// Now and Reboot replace the clock and the reboot in tests.
	Now    func() time.Time
	Reboot func() error
	// Mounter mounts the boot partition (A/B commands); nil = mount(2).
	Mounter slot.Mounter
	// NetSleep replaces the backoff between network retries in tests.
	NetSleep func(ctx context.Context, d time.Duration) error
	// NetStall and NetRetries are upgrade's --stall and --retries: how
	// long a download may go without a byte, and how many times it is
	// retried (0: netfetch's defaults, 30 s and 8; retries < 0: none).
	NetStall   time.Duration
	NetRetries int
}

const usage = `usage: ovrootctl <command> [flags]

commands:
  status [--json]   how the root was built at boot (persistent or VOLATILE, devices, timings)
  changes [--json]  what differs from the factory root, as docker diff prints
                    it: A (added), C (changed), D (deleted) and the path
  backup -o FILE [-z]
                    write the changes (the overlay upper) as an OCI layer
                    tarball: for ovroot build --layer, or any OCI tool
  factory-reset [--reboot] [--cancel]
                    erase every change at the next boot (or withdraw the request)
  restore FILE|- [--reboot], restore --cancel
                    replace every change with a backup (ovrootctl backup's
                    layer tarball) at the next boot, crash-safely
  upgrade BUNDLE [--wipe] [--reboot] [--allow-downgrade] [--progress=json]
                    write an update bundle (a file, a block device, an
                    https:// URL, resumed if the link drops, or an OCI registry
                    reference oci://REGISTRY/REPO:TAG or @sha256:...) to the
                    root slot not running; the next boot tries it (two-slot images)
  verify BUNDLE     check a bundle's signature, version and every member's
                    checksum as upgrade would, and change nothing
  mark-good         confirm the running slot: the loader stops counting its boots
`

// Execute runs the command in c.Args.
func (c Context) Execute(ctx context.Context) error {
	if len(c.Args) == 0 {
		fmt.Fprint(c.Stderr, usage)
		return errors.New("no command given")
	}
	switch c.Args[0] {
	case "status":
		return c.status(c.Args[1:])
	case "changes":
		return c.changes(c.Args[1:])
	case "backup":
		return c.backupCmd(c.Args[1:])
	case "factory-reset":
		return c.factoryReset(c.Args[1:])
	case "restore":
		return c.restore(c.Args[1:])
	case "upgrade":
		return c.upgrade(ctx, c.Args[1:])
	case "mark-good":
		return c.markGood(c.Args[1:])
	case "verify":
		return c.verify(c.Args[1:])
	case "-h", "--help", "help":
		fmt.Fprint(c.Stdout, usage)
		return nil
	}
	fmt.Fprint(c.Stderr, usage)
	return fmt.Errorf("unknown command %q", c.Args[0])
}

func (c Context) path(p string) string {
	if c.Root == "" {
		return p
	}
	return filepath.Join(c.Root, p)
}

func (c Context) flags(name, example string) (*flag.FlagSet, *bool) {
	fs := flag.NewFlagSet("ovrootctl "+name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, "usage: ovrootctl %s [--json]\nexample: %s\n", name, example)
		fs.PrintDefaults()
	}
	return fs, asJSON
}

func (c Context) status(args []string) error {
	fs, asJSON := c.flags("status", "ovrootctl status")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := c.readState()
	if err != nil {
		return err
	}
	rs, err := c.readResetStatus(st)
	if err != nil {
		return err
	}
	dataFailed := ""
	if st.Mode == layout.ModePersistent {
		dataFailed = c.dataFailure(st)
	}
	var slots []slot.SlotInfo
	var slotsErr, polErr error
	var pol *slot.Policy
	if st.Slot != nil {
		slots, slotsErr = c.system().Slots()
		p, err := c.system().Policy()
		pol, polErr = &p, err
	}
	if *asJSON {
		out := struct {
			layout.State
			resetStatus
			Slots       []slot.SlotInfo `json:"slots,omitempty"`
			SlotsError  string          `json:"slots_error,omitempty"`
			Update      *updateStatus   `json:"update,omitempty"`
			UpdateError string          `json:"update_error,omitempty"`
			DataFailed  string          `json:"data_failed,omitempty"`
		}{State: st, resetStatus: rs, Slots: slots, Update: newUpdateStatus(pol), DataFailed: dataFailed}
		if slotsErr != nil {
			out.SlotsError = slotsErr.Error()
		}
		if polErr != nil {
			out.UpdateError = polErr.Error()
		}
		return json.NewEncoder(c.Stdout).Encode(out)
	}
	w := c.Stdout
	if dataFailed != "" {
		fmt.Fprintf(w, "PERSISTENT at boot, data partition FAILING since: %s\n", dataFailed)
		fmt.Fprintln(w, "  writes to the root may fail; what was saved before stays; see dmesg")
	} else if st.Mode == layout.ModeVolatile {
		fmt.Fprintf(w, "VOLATILE: %s\n", st.Reason)
		fmt.Fprintln(w, "  changes are kept in RAM and lost at power-off")
	} else if st.Mode == layout.ModeFailsafe {
		fmt.Fprintf(w, "FAILSAFE: %s\n", st.Reason)
		fmt.Fprintf(w, "  changes are kept in RAM; the data partition is read-only at %s for rescue\n", layout.OverlayDir)
	} else if st.DataFull {
		fmt.Fprintf(w, "%s, data partition FULL\n", strings.ToUpper(string(st.Mode)))
		if st.ReserveReleased {
			fmt.Fprintf(w, "  the %d KiB reserve was used up to keep the root writable; delete files to make room\n", layout.ReserveBytes>>10)
		} else {
			fmt.Fprintln(w, "  no reserve was left to release; writes may fail until files are deleted")
		}
	} else {
		fmt.Fprintf(w, "%s\n", strings.ToUpper(string(st.Mode)))
	}
	fmt.Fprintf(w, "root:      %s on %s (read-only)\n", st.RootDevice, layout.RomDir)
	if n := len(st.Layers); n > 0 {
		names := make([]string, n)
		for i, l := range st.Layers {
			names[n-1-i] = l.Name
		}
		fmt.Fprintf(w, "layers:    %s (top first; each read-only at %s/NAME, stacked on %s)\n", strings.Join(names, ", "), layout.LayersDir, layout.RomDir)
	}
	if v := st.Verity; v != nil {
		fmt.Fprintf(w, "verity:    on, root hash %s; all %d blocks checked at boot in %d ms; mounted through %s\n", v.RootHash, v.Blocks, v.CheckMS, v.Device)
	} else {
		fmt.Fprintln(w, "verity:    off (the root is not checked against a hash tree)")
	}
	if st.DataDevice != "" {
		fmt.Fprintf(w, "data:      %s on %s\n", st.DataDevice, layout.OverlayDir)
	}
	if st.Formatted {
		fmt.Fprintln(w, "first boot: the data partition was blank and was formatted")
	}
	for _, l := range slotLines(st, slots, slotsErr) {
		fmt.Fprintln(w, l)
	}
	if pol != nil {
		for _, l := range updateLines(*pol, polErr) {
			fmt.Fprintln(w, l)
		}
		if l := healthLine(c.system().ReadHealth()); l != "" {
			fmt.Fprintln(w, l)
		}
	}
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "warning:   %s\n", warn)
	}
	for _, l := range rs.lines() {
		fmt.Fprintln(w, l)
	}
	t := st.Timings
	fmt.Fprintf(w, "boot:      root ready in %d ms (modules %d ms, devices %d ms, mounts %d ms)\n", t.Total, t.Modules, t.Devices, t.Mounts)
	return nil
}

// dataFailure says what went wrong with the data filesystem since the
// boot put the upper on it ("" when nothing did): ext4 counted errors
// (/sys/fs/ext4/DEV/errors_count above the count the init recorded; after
// a write the storage failed, ext4 aborts its journal and refuses every
// write), or the kernel made it read-only (older kernels: the
// filesystem's own flags in /proc/self/mountinfo, not the mount's).
func (c Context) dataFailure(st layout.State) string {
	if data, err := os.ReadFile(c.path("/proc/self/mountinfo")); err == nil {
		if why := superReadOnly(string(data), layout.OverlayDir); why != "" {
			return why
		}
	}
	if st.DataErrorsAtBoot == nil || st.DataDevice == "" {
		return ""
	}
	sysfs := c.path(layout.Ext4Sysfs(st.DataDevice))
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(sysfs, name))
		return strings.TrimSpace(string(b))
	}
	n, err := strconv.Atoi(read("errors_count"))
	if err != nil || n <= *st.DataErrorsAtBoot {
		return ""
	}
	why := fmt.Sprintf("the kernel's ext4 on %s reported %d error(s) since the boot", st.DataDevice, n-*st.DataErrorsAtBoot)
	if f := read("last_error_func"); f != "" {
		why += ", the last in " + f
		if code, err := strconv.Atoi(read("last_error_errcode")); err == nil && code > 0 {
			why += " (" + ext4ErrName(code) + ")"
		}
	}
	return why
}

// superReadOnly reports, from mountinfo text, why the filesystem mounted
// at target is read-only though mounted read-write; "" when it is not
// (or is not mounted there). The last mount at target counts.
func superReadOnly(mountinfo, target string) string {
	why := ""
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 3 || f[4] != target {
			continue
		}
		why = ""
		if hasOpt(g[2], "ro") && hasOpt(f[5], "rw") {
			why = fmt.Sprintf("the kernel made the %s on %s read-only after an error (a write the storage refused, or damage found; see dmesg)", g[0], g[1])
		}
	}
	return why
}

func hasOpt(opts, o string) bool {
	for _, x := range strings.Split(opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// ext4ErrName names one of ext4's own error codes (fs/ext4/ext4.h,
// EXT4_ERR_*), what /sys/fs/ext4/DEV/last_error_errcode holds.
func ext4ErrName(code int) string {
	names := []string{1: "unknown error", "EIO: an I/O error", "ENOMEM", "EFSBADCRC: bad checksum",
		"EFSCORRUPTED: damaged metadata", "ENOSPC", "ENOKEY", "EROFS: the journal was aborted",
		"EFBIG", "EEXIST", "ERANGE", "EOVERFLOW", "EBUSY", "ENOTDIR", "ENOTEMPTY", "ESHUTDOWN", "EFAULT"}
	if code < len(names) && names[code] != "" {
		return names[code]
	}
	return fmt.Sprintf("ext4 error code %d", code)
}
