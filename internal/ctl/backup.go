package ctl

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ovroot/ovroot/backup"
	"golang.org/x/sys/unix"
)

const backupExample = `ovrootctl backup -o /mnt/usb/router.tar.gz   # gzip: -z or a .gz/.tgz name
  ssh root@router ovrootctl backup -o - > router.tar   # to stdout`

// backupCmd writes the running upper as an OCI layer tarball (package
// backup): to a file, retried while the upper changes under it, or to
// stdout ("-"), once, failing if anything changed meanwhile.
func (c Context) backupCmd(args []string) error {
	fs := flag.NewFlagSet("ovrootctl backup", flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	out := fs.String("o", "", "the layer tarball to write, or - for stdout (required)")
	gz := fs.Bool("z", false, "gzip it (also when the name ends in .gz or .tgz)")
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, "usage: ovrootctl backup -o FILE [-z]\nexample: %s\n", backupExample)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("backup: give the output with -o FILE (or -o - for stdout)")
	}
	upper, err := c.upper()
	if err != nil {
		return err
	}
	o := backup.Options{Gzip: *gz || strings.HasSuffix(*out, ".gz") || strings.HasSuffix(*out, ".tgz")}
	if *out == "-" {
		if err := backup.Write(c.Stdout, upper, o); err != nil {
			return fmt.Errorf("backup of %s to stdout: %w; discard what was written and try again", upper, err)
		}
		return nil
	}
	if err := c.outsideRoot(*out); err != nil {
		return err
	}
	if err := backup.WriteFile(upper, *out, o); err != nil {
		return fmt.Errorf("backup of %s to %s: %w", upper, *out, err)
	}
	return nil
}

// outsideRoot refuses an output in the running root: there it is written
// into the upper it copies (and would copy itself, and fill the data
// partition with its own growth). A file written straight into the upper
// directory is left out by package backup.
func (c Context) outsideRoot(out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	dir := filepath.Dir(abs)
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return fmt.Errorf("backup output %s: %w", out, err)
	}
	var d, r unix.Stat_t
	if err := unix.Stat(dir, &d); err != nil {
		return fmt.Errorf("backup output %s: %w", out, err)
	}
	if err := unix.Stat(c.path("/"), &r); err != nil {
		return err
	}
	if sfs.Type == unix.OVERLAYFS_SUPER_MAGIC && d.Dev == r.Dev {
		return fmt.Errorf("backup output %s is in the running root, whose changes are what is copied: write it to another filesystem (/tmp, a USB stick) or to stdout with -o -", out)
	}
	return nil
}
