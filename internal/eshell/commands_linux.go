package eshell

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ls [-l] [path...]: names, one a line; -l adds mode, size and link target.
func ls(args []string, _ io.Reader, out, errw io.Writer) error {
	long := false
	var paths []string
	for _, a := range args {
		if a == "-l" {
			long = true
			continue
		}
		paths = append(paths, a)
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}
	var failed error
	show := func(p, name string) {
		if !long {
			fmt.Fprintln(out, name)
			return
		}
		fi, err := os.Lstat(p)
		if err != nil {
			fmt.Fprintf(errw, "ls: %v\n", err)
			failed = errors.New("some files could not be listed")
			return
		}
		target := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if t, err := os.Readlink(p); err == nil {
				target = " -> " + t
			}
		}
		fmt.Fprintf(out, "%s %10d %s%s\n", fi.Mode(), fi.Size(), name, target)
	}
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			fmt.Fprintf(errw, "ls: %v\n", err)
			failed = errors.New("some files could not be listed")
			continue
		}
		if !fi.IsDir() {
			show(p, p)
			continue
		}
		if len(paths) > 1 {
			fmt.Fprintf(out, "%s:\n", p)
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			fmt.Fprintf(errw, "ls: %v\n", err)
			failed = errors.New("some files could not be listed")
			continue
		}
		for _, e := range entries {
			show(filepath.Join(p, e.Name()), e.Name())
		}
	}
	return failed
}

// cat [file...]: the files, or the input, to the output.
func cat(args []string, in io.Reader, out, _ io.Writer) error {
	if len(args) == 0 {
		_, err := io.Copy(out, in)
		return err
	}
	for _, p := range args {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// dmesg: the kernel's log buffer.
func dmesg(_ []string, _ io.Reader, out, _ io.Writer) error {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		return fmt.Errorf("size of the kernel log: %w", err)
	}
	buf := make([]byte, n)
	m, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return fmt.Errorf("read the kernel log: %w", err)
	}
	_, err = out.Write(buf[:m])
	return err
}

// mountFlags are the -o words that are flags, not filesystem data.
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "rw": 0, "remount": unix.MS_REMOUNT, "bind": unix.MS_BIND,
	"nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
}

// mount: the mount table; mount [-t type] [-o opts] source target mounts.
func mount(args []string, _ io.Reader, out, _ io.Writer) error {
	if len(args) == 0 {
		data, err := os.ReadFile("/proc/mounts")
		if err != nil {
			return err
		}
		_, err = out.Write(data)
		return err
	}
	fstype, opts := "", ""
	var rest []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-t", "-o":
			if i+1 == len(args) {
				return fmt.Errorf("%s needs a value", args[i])
			}
			if args[i] == "-t" {
				fstype = args[i+1]
			} else {
				opts = args[i+1]
			}
			i++
		default:
			rest = append(rest, args[i])
		}
	}
	if len(rest) != 2 {
		return errors.New("usage: mount [-t type] [-o opts] source target")
	}
	var flags uintptr
	var data []string
	for _, o := range strings.Split(opts, ",") {
		if o == "" {
			continue
		}
		if f, ok := mountFlags[o]; ok {
			flags |= f
		} else {
			data = append(data, o)
		}
	}
	if err := unix.Mount(rest[0], rest[1], fstype, flags, strings.Join(data, ",")); err != nil {
		return fmt.Errorf("mount %s on %s (type %q, options %q): %w", rest[0], rest[1], fstype, opts, err)
	}
	return nil
}

// umount target...
func umount(args []string, _ io.Reader, _, _ io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: umount target...")
	}
	for _, t := range args {
		if err := unix.Unmount(t, 0); err != nil {
			return fmt.Errorf("umount %s: %w", t, err)
		}
	}
	return nil
}
