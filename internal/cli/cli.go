// Package cli is the ovroot host tool's command line: it parses flags and
// calls into config, initramfs, imagebuild, qemu and demo, which do the work.
// cmd/ovroot is a three-line main around Context.Execute, so tests drive the
// CLI in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ovroot/ovroot/internal/tmpdir"
)

// Context is one invocation of ovroot.
type Context struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Args           []string
}

type command struct {
	summary string
	run     func(c Context, ctx context.Context, args []string) error
}

var commands = map[string]command{
	"initramfs": {"build an initramfs (init + kernel modules + init config)", runInitramfs},
	"build":     {"assemble a bootable GPT disk image", runBuild},
	"run":       {"boot a disk image in QEMU with the console on this terminal", runRun},
	"demo":      {"build the demo device image (u-root userland)", runDemo},
	"fetch":     {"bring Debian's kernel, modules, e2fsck and systemd-boot for an arch into the kernel cache", runFetch},
	"version":   {"print ovroot's version", runVersion},
	"keygen":    {"make a key pair that signs update bundles (minisign format)", runKeygen},
	"verify":    {"check an update bundle's signature and checksums, as a device does", runVerify},
	"push":      {"publish an update bundle to an OCI registry (devices: ovrootctl upgrade oci://...)", runPush},
	"pull":      {"fetch an update bundle back from an OCI registry", runPull},
}

// ErrUsage marks errors whose message is a usage problem (exit status 2).
var ErrUsage = errors.New("usage")

// Execute runs the subcommand named in c.Args.
func (c Context) Execute(ctx context.Context) error {
	if len(c.Args) == 0 || c.Args[0] == "-h" || c.Args[0] == "--help" || c.Args[0] == "help" {
		c.usage(c.Stdout)
		if len(c.Args) == 0 {
			return fmt.Errorf("%w: no command given", ErrUsage)
		}
		return nil
	}
	if c.Args[0] == "--version" || c.Args[0] == "-version" {
		fmt.Fprintln(c.Stdout, version())
		return nil
	}
	cmd, ok := commands[c.Args[0]]
	if !ok {
		c.usage(c.Stderr)
		return fmt.Errorf("%w: unknown command %q", ErrUsage, c.Args[0])
	}
	// What a killed run (SIGKILL: no cleanup of its own ran) left in the
	// temporary directory: removed now, never a live run's.
	if removed, err := tmpdir.CleanStale(); err != nil {
		c.logf("temporary directories of earlier runs: %v", err)
	} else if len(removed) > 0 {
		c.logf("removed %d temporary directories that killed runs left: %s", len(removed), strings.Join(removed, ", "))
	}
	err := cmd.run(c, ctx, c.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func (c Context) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ovroot <command> [flags]   (ovroot <command> -h for its flags and an example)")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
}

// flagSet makes a FlagSet whose -h prints the synopsis and an example.
func (c Context) flagSet(name, synopsis, example string) *flag.FlagSet {
	fs := flag.NewFlagSet("ovroot "+name, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, "usage: ovroot %s %s\n\nexample:\n  %s\n\nflags:\n", name, synopsis, example)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, allowing them after positional arguments too
// (`ovroot run disk.img --timeout 60s`).
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			// An empty value silently meant "the default list".
			return fmt.Errorf("empty name in %q", v)
		}
		*l = append(*l, strings.TrimSpace(s))
	}
	return nil
}

// pathList is a repeatable flag of paths, one per use (a path may hold a
// comma).
type pathList []string

func (l *pathList) String() string { return strings.Join(*l, " ") }
func (l *pathList) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("empty path")
	}
	*l = append(*l, v)
	return nil
}

// noArgs refuses positional arguments a command does not take: they
// were silently ignored (`ovroot build ... x.img` without -o).
func noArgs(cmd string, pos []string) error {
	if len(pos) == 0 {
		return nil
	}
	return fmt.Errorf("%w: ovroot %s takes no arguments besides its flags, got %q (a file to write is given with -o)", ErrUsage, cmd, pos)
}
