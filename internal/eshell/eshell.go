// Package eshell is the initramfs's emergency shell and its few commands
// (ls, cat, dmesg, mount, umount), linked into the init itself: the
// initramfs carries /bin/sh, /bin/ls, ... as symlinks to /init, which runs
// the command its name says (Main), as busybox does. One Go binary instead
// of six shares one Go runtime: u-root's rush and four u-root commands as
// separate programs were 4.4 MB of a 7 MB initramfs.
//
// The shell reads plain lines in the terminal's cooked mode (so it works
// on any serial console, like rush): words split at blanks, '...' and "..."
// quote, `a | b` pipes, `> f`, `>> f` and `< f` redirect. No variables, no
// globbing, no control flow. Programs outside it (e2fsck) run from PATH.
// It does not decide when it runs (package boot does).
package eshell

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
)

// Commands are the programs Main runs by name; the initramfs links each
// in /bin to the init.
var Commands = map[string]func(args []string, stdin io.Reader, stdout, stderr io.Writer) error{
	"sh":     func(args []string, in io.Reader, out, errw io.Writer) error { return Shell(in, out, errw) },
	"ls":     ls,
	"cat":    cat,
	"dmesg":  dmesg,
	"mount":  mount,
	"umount": umount,
}

// Names lists Commands, sorted.
func Names() []string {
	names := make([]string, 0, len(Commands))
	for n := range Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the command name0 (argv[0], any directory) stands for.
func Lookup(name0 string) (string, bool) {
	name := filepath.Base(name0)
	_, ok := Commands[name]
	return name, ok
}

// Main runs the command args[0] names with the process's stdio and exits
// with its status.
func Main(args []string) {
	name, _ := Lookup(args[0])
	if err := Commands[name](args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Prompt is what the shell prints before each line.
const Prompt = "% "

// Shell reads command lines from in until end of input (Ctrl-D) or exit.
func Shell(in io.Reader, out, errw io.Writer) error {
	// Ctrl-C interrupts what runs, not the shell: a handled signal (not
	// an ignored one) is reset to the default in the programs it starts.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	sc := bufio.NewScanner(in)
	for {
		fmt.Fprint(out, Prompt)
		if !sc.Scan() {
			fmt.Fprintln(out)
			return sc.Err()
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if line == "exit" {
			return nil
		}
		if err := runLine(line, in, out, errw); err != nil {
			fmt.Fprintf(errw, "%v\n", err)
		}
	}
}

// stage is one command of a pipeline with its redirections.
type stage struct {
	args      []string
	in, out   string
	appendOut bool
}

// parse splits a line into pipeline stages.
func parse(line string) ([]stage, error) {
	var stages []stage
	cur := stage{}
	var word strings.Builder
	inWord := false
	redirect := "" // "<", ">", ">>" waiting for its file name
	flush := func() error {
		if !inWord {
			return nil
		}
		w := word.String()
		word.Reset()
		inWord = false
		switch redirect {
		case "<":
			cur.in = w
		case ">", ">>":
			cur.out, cur.appendOut = w, redirect == ">>"
		default:
			cur.args = append(cur.args, w)
		}
		redirect = ""
		return nil
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(line[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated %c", c)
			}
			word.WriteString(line[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == ' ' || c == '\t':
			flush()
		case c == '|':
			flush()
			if redirect != "" || len(cur.args) == 0 {
				return nil, errors.New("syntax error near |")
			}
			stages = append(stages, cur)
			cur = stage{}
		case c == '<' || c == '>':
			flush()
			if redirect != "" {
				return nil, fmt.Errorf("syntax error near %c", c)
			}
			redirect = string(c)
			if c == '>' && i+1 < len(line) && line[i+1] == '>' {
				redirect = ">>"
				i++
			}
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	flush()
	if redirect != "" {
		return nil, fmt.Errorf("%s without a file name", redirect)
	}
	if len(cur.args) == 0 {
		if len(stages) > 0 {
			return nil, errors.New("syntax error: | at the end")
		}
		return nil, nil
	}
	return append(stages, cur), nil
}

// runLine runs one pipeline: every stage is a process (the commands of
// this package through the init's /bin links), so Ctrl-C stops them and
// not the shell.
func runLine(line string, in io.Reader, out, errw io.Writer) error {
	stages, err := parse(line)
	if err != nil || len(stages) == 0 {
		return err
	}
	if stages[0].args[0] == "cd" {
		dir := "/"
		if len(stages[0].args) > 1 {
			dir = stages[0].args[1]
		}
		return os.Chdir(dir)
	}
	cmds := make([]*exec.Cmd, len(stages))
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for i, s := range stages {
		cmd := exec.Command(s.args[0], s.args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, errw
		if i > 0 {
			r, err := cmds[i-1].StdoutPipe()
			if err != nil {
				return err
			}
			cmd.Stdin = r
		}
		if s.in != "" {
			f, err := os.Open(s.in)
			if err != nil {
				return err
			}
			closers = append(closers, f)
			cmd.Stdin = f
		}
		if s.out != "" {
			flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			if s.appendOut {
				flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
			}
			f, err := os.OpenFile(s.out, flags, 0o644)
			if err != nil {
				return err
			}
			closers = append(closers, f)
			cmd.Stdout = f
		}
		cmds[i] = cmd
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			return err
		}
	}
	var last error
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			last = fmt.Errorf("%s: %w", c.Args[0], err)
		}
	}
	return last
}
