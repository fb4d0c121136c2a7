package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"

	"golang.org/x/sys/unix"
)

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// terminal is ovroot's controlling terminal, lent to QEMU for one run.
//
// QEMU drives the terminal itself (raw mode, its Ctrl-a escapes) from the
// terminal's foreground process group, rather than ovroot relaying keys
// from a terminal it made raw. The difference shows when ovroot cannot
// clean up: whoever made the terminal raw must put it back, and QEMU does
// so whenever it exits on a signal it can catch. If ovroot is SIGKILLed,
// Pdeathsig sends QEMU SIGTERM and QEMU restores the terminal; a relaying
// ovroot killed that way would leave the terminal raw with nobody to fix
// it. ovroot also restores the terminal after every run itself, for the
// one case QEMU cannot: QEMU SIGKILLed (by --timeout or a signal to
// ovroot). The limit: if ovroot and QEMU are both SIGKILLed, the terminal
// stays raw (`stty sane` or `reset` repairs it), and the shell that
// started ovroot takes the foreground back as it does after any job.
type terminal struct {
	f       *os.File
	fd      int
	termios *unix.Termios
	pgrp    int // the foreground process group to give the terminal back to
}

// takeTerminal records f's modes and foreground process group, which must
// be ours: a background ovroot would hand QEMU a terminal it may not read.
func takeTerminal(f *os.File) (*terminal, error) {
	fd := int(f.Fd())
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read the modes of terminal %s: %w", f.Name(), err)
	}
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil {
		return nil, fmt.Errorf("stdin (%s) is a terminal but not this process's controlling terminal (%w): QEMU could not read it; redirect stdin from a file or pipe", f.Name(), err)
	}
	if pgrp != unix.Getpgrp() {
		return nil, fmt.Errorf("running in the background of its terminal (%s), where QEMU could not read it: run it in the foreground, or redirect stdin from a file or pipe", f.Name())
	}
	return &terminal{f: f, fd: fd, termios: tio, pgrp: pgrp}, nil
}

// attach makes cmd's process group the terminal's foreground group from
// its start, and has the kernel send QEMU SIGTERM, which QEMU catches to
// restore the terminal, should ovroot die without doing so.
func (t *terminal) attach(cmd *exec.Cmd) {
	cmd.SysProcAttr.Foreground = true
	cmd.SysProcAttr.Ctty = t.fd // a descriptor of ours, for Foreground
	cmd.SysProcAttr.Pdeathsig = unix.SIGTERM
}

// restore gives the foreground back to ovroot's process group and puts the
// terminal's modes back as takeTerminal found them. Until then ovroot is
// in the background, where setting either raises SIGTTOU, which stops the
// process unless it is ignored.
func (t *terminal) restore() error {
	signal.Ignore(unix.SIGTTOU)
	defer signal.Reset(unix.SIGTTOU)
	if err := unix.IoctlSetPointerInt(t.fd, unix.TIOCSPGRP, t.pgrp); err != nil {
		return fmt.Errorf("give terminal %s back to ovroot's process group %d: %w", t.f.Name(), t.pgrp, err)
	}
	if err := unix.IoctlSetTermios(t.fd, unix.TCSETS, t.termios); err != nil {
		return fmt.Errorf("restore the modes of terminal %s: %w", t.f.Name(), err)
	}
	return nil
}
