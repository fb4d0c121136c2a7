package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
)

const restoreExample = `ovrootctl restore /mnt/usb/router.tar.gz --reboot
  ssh root@router ovrootctl restore - < router.tar   # from stdin`

// restore stages a backup layer (ovrootctl backup's output) for a restore
// at the next boot (package reset), or cancels one. The file is checked
// whole and copied into the data partition's .ovroot, so it may be read
// from anywhere, stdin included, and removed afterwards.
func (c Context) restore(args []string) error {
	fs := flag.NewFlagSet("ovrootctl restore", flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	cancel := fs.Bool("cancel", false, "withdraw a pending restore")
	reboot := fs.Bool("reboot", false, "reboot now, so the restore happens at once")
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, "usage: ovrootctl restore [--reboot] FILE|-\n       ovrootctl restore --cancel\nexample: %s\n", restoreExample)
		fs.PrintDefaults()
	}
	// Flags after the file too (ovrootctl restore FILE --reboot).
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *cancel != (len(files) == 0) || len(files) > 1 {
		fs.Usage()
		return errors.New("restore: give one backup file (or - for stdin), or --cancel alone")
	}
	st, err := c.readState()
	if err != nil {
		return err
	}
	if st.Mode != layout.ModePersistent {
		return fmt.Errorf("the data partition is not in use (%s: %s): a restore could not be stored", strings.ToUpper(string(st.Mode)), st.Reason)
	}
	dir := c.path(layout.OverlayDir)
	if *cancel {
		p, err := reset.Pending(dir)
		if err != nil {
			return err
		}
		if p != nil && p.Restore == "" {
			fmt.Fprintln(c.Stdout, "no restore is pending, but a factory reset is: withdraw it with ovrootctl factory-reset --cancel")
			return nil
		}
		if _, err := reset.Cancel(dir); err != nil {
			return fmt.Errorf("cancel the restore: %w", err)
		}
		if p != nil {
			fmt.Fprintln(c.Stdout, "restore cancelled")
		} else {
			fmt.Fprintln(c.Stdout, "no restore was pending")
		}
		return nil
	}
	var in io.Reader = c.Stdin
	name := "stdin"
	if files[0] != "-" {
		f, err := os.Open(files[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in, name = f, files[0]
	} else if in == nil {
		in = os.Stdin
	}
	before, err := reset.Pending(dir)
	if err != nil {
		return err
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	sum, err := reset.ScheduleRestore(dir, in, now)
	if err != nil {
		return fmt.Errorf("restore %s: %w; nothing was changed", name, err)
	}
	fmt.Fprintf(c.Stdout, "restore staged: %s, %d entries, %d bytes of file data, copied to %s\n", name, sum.Entries, sum.Bytes, layout.Meta(layout.OverlayDir, layout.RestoreFile))
	if before != nil && before.Restore == "" {
		fmt.Fprintln(c.Stdout, "it replaces the pending factory reset")
	}
	fmt.Fprintln(c.Stdout, "at the next boot the backup replaces every change since the factory image (reset.keep does not apply)")
	fmt.Fprintln(c.Stdout, "withdraw it with: ovrootctl restore --cancel")
	if !*reboot {
		return nil
	}
	return c.reboot()
}
