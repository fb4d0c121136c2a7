// Package qemu boots ovroot disk images in QEMU and drives their serial
// console: start, wait for a console line, send a line, wait for power-off,
// kill (a power cut). It is both `ovroot run` and the QEMU test harness, in
// the style of hugelgupf/vmtest.
//
// A VM boots either directly (-kernel, -initrd, -append: ForImage) or from
// its disk alone through firmware (OVMF, AAVMF or U-Boot: ForImageLoader,
// firmware.go), as the device does.
//
// It always uses TCG unless told otherwise: on the machines this project is
// built on /dev/kvm opens but the guest hangs. It does not build images.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ovroot/ovroot/layout"
)

// Config is one VM.
type Config struct {
	Arch    layout.Arch
	Binary  string // default qemu-system-x86_64 / qemu-system-aarch64 / qemu-system-arm
	Kernel  string
	Initrd  string
	Cmdline string
	Disks   []string // raw images, attached in order as virtio-blk-pci
	// Snapshot leaves the disks untouched: writes go to a temporary
	// overlay QEMU drops at exit (snapshot=on).
	Snapshot bool
	// ReadOnlyDisks are attached after Disks, read-only (readonly=on):
	// files handed to the guest, such as an update bundle, which it reads
	// as /dev/vdb... and can never change.
	ReadOnlyDisks []string
	// Firmware boots the VM from its disk instead of -kernel; zero =
	// QEMU's default firmware.
	Firmware Firmware
	MemoryMB int      // default 512
	CPUs     int      // default 1
	Accel    string   // default "tcg"
	QMP      string   // unix socket path for QMP, optional
	Extra    []string // appended verbatim
	// Interactive multiplexes QEMU's monitor on the console (Ctrl-a c) and
	// puts a terminal in raw mode; for a person at a terminal.
	Interactive bool
}

var archArgs = map[layout.Arch]struct {
	binary, pkg string
	machine     []string
}{
	layout.X86_64: {"qemu-system-x86_64", "qemu-system-x86", []string{"-M", "q35"}},
	layout.ARM64:  {"qemu-system-aarch64", "qemu-system-arm", []string{"-M", "virt", "-cpu", "cortex-a57"}},
	// Cortex-A15: ARMv7-A with VFPv4 and NEON, what Debian's armmp kernel
	// and GOARM=7 programs run on. highmem=off: the A15 has LPAE, so QEMU
	// would put the PCIe ECAM and MMIO above 4 GiB, where armmp (built
	// without LPAE) cannot reach them ("pci-host-generic: probe of
	// 4010000000.pcie failed with error -16") and finds no disk.
	layout.ARM: {"qemu-system-arm", "qemu-system-arm", []string{"-M", "virt,highmem=off", "-cpu", "cortex-a15"}},
}

// Args returns the binary and its arguments.
func (c Config) Args() (string, []string, error) {
	a, ok := archArgs[c.Arch]
	if !ok {
		return "", nil, fmt.Errorf("qemu: unknown arch %q", c.Arch)
	}
	bin := c.Binary
	if bin == "" {
		bin = a.binary
	}
	mem, cpus, accel := c.MemoryMB, c.CPUs, c.Accel
	if mem == 0 {
		mem = 512
	}
	if cpus == 0 {
		cpus = 1
	}
	if accel == "" {
		accel = "tcg"
	}
	args := append([]string{}, a.machine...)
	args = append(args, "-accel", accel, "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		// -no-reboot: a guest reboot or kernel panic (panic=-1) ends QEMU.
		"-nodefaults", "-no-reboot", "-display", "none")
	if c.Interactive {
		args = append(args, "-serial", "mon:stdio")
	} else {
		args = append(args, "-serial", "stdio", "-monitor", "none")
	}
	if c.Kernel != "" {
		args = append(args, "-kernel", c.Kernel)
	}
	if c.Initrd != "" {
		args = append(args, "-initrd", c.Initrd)
	}
	if c.Cmdline != "" {
		args = append(args, "-append", c.Cmdline)
	}
	switch {
	case c.Firmware.BIOS != "":
		args = append(args, "-bios", c.Firmware.BIOS)
	case c.Firmware.Code != "":
		// UEFI in two flash chips: the code read-only, the variable
		// store writable (the private copy the caller made).
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+escape(c.Firmware.Code))
		if c.Firmware.Vars != "" {
			args = append(args, "-drive", "if=pflash,format=raw,file="+escape(c.Firmware.Vars))
		}
	}
	snap := ""
	if c.Snapshot {
		snap = ",snapshot=on"
	}
	for i, d := range c.Disks {
		args = append(args, "-drive", fmt.Sprintf("if=none,id=d%d,file=%s,format=raw%s", i, escape(d), snap),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=d%d", i))
	}
	for i, d := range c.ReadOnlyDisks {
		id := len(c.Disks) + i
		args = append(args, "-drive", fmt.Sprintf("if=none,id=d%d,file=%s,format=raw,readonly=on", id, escape(d)),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=d%d", id))
	}
	if c.QMP != "" {
		args = append(args, "-qmp", "unix:"+c.QMP+",server=on,wait=off")
	}
	args = append(args, c.Extra...)
	return bin, args, nil
}

// escape quotes a value in QEMU's option syntax, where a comma is doubled.
func escape(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// CommandLine is the command, shell-quoted, to rerun by hand.
func (c Config) CommandLine() string {
	bin, args, err := c.Args()
	if err != nil {
		return err.Error()
	}
	q := []string{bin}
	for _, a := range args {
		if strings.ContainsAny(a, " \"'$\\") || a == "" {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q = append(q, a)
	}
	return strings.Join(q, " ")
}

func (c Config) command(ctx context.Context) (*exec.Cmd, error) {
	bin, args, err := c.Args()
	if err != nil {
		return nil, err
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%s not found (Debian package %s): %w", bin, archArgs[c.Arch].pkg, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so killing it never leaves QEMU behind.
		Setpgid: true,
		// And it dies with us, whatever kills us (SIGKILL included). The
		// kernel sends this when the thread that started QEMU ends, not
		// the process: start it with startPinned.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd, nil
}

// startPinned starts cmd and waits for it on one goroutine locked to its
// OS thread, and calls waited with Wait's result. Pdeathsig fires when the
// thread that forked the child exits, and the Go runtime ends a thread when
// a goroutine locked to it returns (a caller's LockOSThread, say); holding
// the lock from Start to the end of Wait keeps that thread alive exactly
// as long as QEMU.
func startPinned(cmd *exec.Cmd, waited func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited(cmd.Wait())
	}()
	return <-started
}

// Options for Start.
type Options struct {
	Console io.Writer // optional tee of everything the guest prints
}

// VM is a running QEMU.
type VM struct {
	cfg    Config
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	buf    strings.Builder // console, "\r\n" normalized to "\n"
	cursor int
	notify chan struct{} // closed and replaced on every change
	done   chan struct{} // closed when QEMU has exited
	err    error         // exit status
}

// Start boots the VM.
func Start(ctx context.Context, c Config, o Options) (*VM, error) {
	cmd, err := c.command(ctx)
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	vm := &VM{cfg: c, cmd: cmd, stdin: stdin, notify: make(chan struct{}), done: make(chan struct{})}
	readDone := make(chan struct{})
	err = startPinned(cmd, func(err error) {
		<-readDone
		vm.mu.Lock()
		vm.err = err
		close(vm.done)
		close(vm.notify)
		vm.notify = make(chan struct{})
		vm.mu.Unlock()
	})
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start %s: %w", c.CommandLine(), err)
	}
	go func() {
		defer close(readDone)
		defer pr.Close()
		b := make([]byte, 32<<10)
		for {
			n, err := pr.Read(b)
			if n > 0 {
				if o.Console != nil {
					o.Console.Write(b[:n])
				}
				vm.mu.Lock()
				vm.buf.WriteString(strings.ReplaceAll(string(b[:n]), "\r", ""))
				close(vm.notify)
				vm.notify = make(chan struct{})
				vm.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	return vm, nil
}

// wait calls match on the console after the cursor until it reports a
// match (returning the end offset, relative to the cursor) or time is up.
func (vm *VM) wait(timeout time.Duration, what string, match func(s string) (end int, ok bool)) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		vm.mu.Lock()
		s := vm.buf.String()[vm.cursor:]
		if end, ok := match(s); ok {
			vm.cursor += end
			vm.mu.Unlock()
			return s[:end], nil
		}
		notify, exited := vm.notify, vm.exited()
		vm.mu.Unlock()
		if exited {
			return "", vm.failure("QEMU exited while waiting for " + what)
		}
		select {
		case <-notify:
		case <-deadline.C:
			return "", vm.failure(fmt.Sprintf("timed out after %s waiting for %s", timeout, what))
		}
	}
}

func (vm *VM) exited() bool {
	select {
	case <-vm.done:
		return true
	default:
		return false
	}
}

func (vm *VM) failure(msg string) error {
	return fmt.Errorf("%s\n--- last console lines ---\n%s\n--- QEMU: %s", msg, vm.Tail(40), vm.cfg.CommandLine())
}

// Expect waits for substr after the cursor and returns the whole line
// holding it; the cursor moves past the match.
func (vm *VM) Expect(timeout time.Duration, substr string) (string, error) {
	var line string
	_, err := vm.wait(timeout, fmt.Sprintf("%q", substr), func(s string) (int, bool) {
		i := strings.Index(s, substr)
		if i < 0 {
			return 0, false
		}
		// Wait for the whole line: the rest of it may still be on its way.
		end := strings.Index(s[i:], "\n")
		if end < 0 {
			return 0, false
		}
		start := strings.LastIndex(s[:i], "\n") + 1
		line = strings.TrimSuffix(s[start:i+end], "\r")
		return i + len(substr), true
	})
	return line, err
}

// ExpectRegexp waits for re after the cursor and returns its submatches.
func (vm *VM) ExpectRegexp(timeout time.Duration, re *regexp.Regexp) ([]string, error) {
	var m []string
	_, err := vm.wait(timeout, fmt.Sprintf("/%s/", re), func(s string) (int, bool) {
		loc := re.FindStringSubmatchIndex(s)
		if loc == nil {
			return 0, false
		}
		m = make([]string, len(loc)/2)
		for i := range m {
			if loc[2*i] >= 0 {
				m[i] = s[loc[2*i]:loc[2*i+1]]
			}
		}
		return loc[1], true
	})
	return m, err
}

// ReadUntil waits for substr and returns what came before it.
func (vm *VM) ReadUntil(timeout time.Duration, substr string) (string, error) {
	out, err := vm.wait(timeout, fmt.Sprintf("%q", substr), func(s string) (int, bool) {
		i := strings.Index(s, substr)
		return i + len(substr), i >= 0
	})
	return strings.TrimSuffix(out, substr), err
}

// Send types a line on the guest console.
func (vm *VM) Send(line string) error {
	_, err := io.WriteString(vm.stdin, line+"\n")
	return err
}

// SendRaw types bytes on the guest console as they are (e.g. "\x04", Ctrl-D).
func (vm *VM) SendRaw(s string) error {
	_, err := io.WriteString(vm.stdin, s)
	return err
}

// Wait waits for QEMU to exit; on timeout it kills QEMU. A non-zero exit
// is an error.
func (vm *VM) Wait(timeout time.Duration) error {
	select {
	case <-vm.done:
	case <-time.After(timeout):
		vm.Kill()
		<-vm.done
		return vm.failure(fmt.Sprintf("QEMU still running after %s; killed", timeout))
	}
	if vm.err != nil {
		return vm.failure(fmt.Sprintf("QEMU exited: %v", vm.err))
	}
	return nil
}

// Kill cuts the power: SIGKILL to QEMU's process group. Safe after exit.
func (vm *VM) Kill() error {
	if vm.exited() {
		return nil
	}
	err := syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
	<-vm.done
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Exited reports whether QEMU has exited.
func (vm *VM) Exited() bool { return vm.exited() }

// Console is everything the guest printed so far.
func (vm *VM) Console() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.buf.String()
}

// ansiRE matches terminal control sequences (CSI and OSC), which would
// make a failure message erase itself when printed.
var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?`)

// Tail is the last n lines of the console, with terminal control
// sequences removed.
func (vm *VM) Tail(n int) string {
	text := ansiRE.ReplaceAllString(vm.Console(), "")
	text = strings.Map(func(r rune) rune {
		if r < ' ' && r != '\n' && r != '\t' {
			return '?'
		}
		return r
	}, text)
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Run boots c with the console on stdin/stdout until QEMU exits: the
// guest powers off, a person types Ctrl-a x, the timeout passes or ctx is
// cancelled (ovroot's SIGINT, SIGTERM, SIGHUP).
//
// When stdin is a terminal the console is interactive: QEMU's -serial
// mon:stdio reads the terminal itself and makes it raw, so every key goes
// to the guest (Ctrl-C too) except the Ctrl-a escapes (x quits, c the
// monitor). A process may read or set its terminal only from the
// terminal's foreground process group, so QEMU, in its own process group
// as always, is put in the foreground; when it has gone, however it went,
// Run gives the foreground back and puts the terminal's modes back as it
// found them. See terminal for why QEMU, not ovroot, drives the terminal.
func Run(ctx context.Context, c Config, stdin io.Reader, stdout io.Writer, timeout time.Duration) error {
	var term *terminal
	if f, ok := stdin.(*os.File); ok && isTerminal(f) {
		var err error
		if term, err = takeTerminal(f); err != nil {
			return err
		}
		c.Interactive = true
		fmt.Fprintln(os.Stderr, "ovroot: console attached; Ctrl-a x quits QEMU, Ctrl-a h lists the other keys")
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd, err := c.command(ctx)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stdout
	if term != nil {
		term.attach(cmd)
	}
	waited := make(chan error, 1)
	err = startPinned(cmd, func(err error) { waited <- err })
	if err == nil {
		err = <-waited
	}
	err = runResult(ctx, c, timeout, err)
	if term != nil {
		if rerr := term.restore(); rerr != nil {
			return errors.Join(err, rerr)
		}
		if ctx.Err() != nil {
			// QEMU was killed wherever the cursor was: start our message on a line of its own.
			fmt.Fprintln(os.Stderr)
		}
	}
	return err
}

func runResult(ctx context.Context, c Config, timeout time.Duration, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("killed QEMU after --timeout %s", timeout)
	case ctx.Err() != nil:
		return fmt.Errorf("killed QEMU: %w", context.Cause(ctx))
	case err != nil:
		return fmt.Errorf("QEMU: %w (command: %s)", err, c.CommandLine())
	}
	return nil
}
