package boot

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// Logf is how the boot sequence reports; tests pass t.Logf.
type Logf func(format string, args ...any)

// Kernel log levels used for /dev/kmsg records (include/linux/kern_levels.h).
const (
	levelErr     = 3
	levelWarning = 4
	levelInfo    = 6
	levelDebug   = 7
)

// Logger writes each message as one line prefixed "ovroot: " to the console
// and, once attached, to the kernel log (/dev/kmsg), so it is on the serial
// console during boot and in dmesg afterwards.
//
// The kernel echoes kmsg records to the console itself when their level is
// below console_loglevel; in that case the direct console write is skipped so
// every line appears once. With "quiet" (console_loglevel 4) info lines are
// not echoed, so they are written to the console directly.
type Logger struct {
	mu              sync.Mutex
	console         io.Writer
	kmsg            io.Writer
	consoleLoglevel int
}

// NewLogger logs to console until AttachKmsg is called.
func NewLogger(console io.Writer) *Logger { return &Logger{console: console} }

// AttachKmsg starts writing records to kmsg. printkSettings is the content of
// /proc/sys/kernel/printk (its first field is console_loglevel); empty means
// unknown, in which case the kernel is assumed not to echo anything.
func (l *Logger) AttachKmsg(kmsg io.Writer, printkSettings string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kmsg = kmsg
	l.consoleLoglevel = 0
	if f := strings.Fields(printkSettings); len(f) > 0 {
		fmt.Sscanf(f[0], "%d", &l.consoleLoglevel)
	}
}

func (l *Logger) hasKmsg() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.kmsg != nil
}

func (l *Logger) log(level int, format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	echoed := false
	if l.kmsg != nil {
		// One write per record: /dev/kmsg takes a whole record per write(2).
		for _, line := range strings.Split(msg, "\n") {
			if _, err := fmt.Fprintf(l.kmsg, "<%d>ovroot: %s\n", level, line); err == nil {
				echoed = level < l.consoleLoglevel
			}
		}
	}
	if !echoed {
		for _, line := range strings.Split(msg, "\n") {
			fmt.Fprintf(l.console, "ovroot: %s\n", line)
		}
	}
}

// Infof logs a step.
func (l *Logger) Infof(format string, args ...any) { l.log(levelInfo, format, args...) }

// Warnf logs something the device survives but a person must know about.
func (l *Logger) Warnf(format string, args ...any) { l.log(levelWarning, format, args...) }

// Tracef writes a debug record to the kernel log only (never the
// console: a serial line costs milliseconds per line, which a timeline of
// the boot would then measure), dropped before kmsg is attached.
func (l *Logger) Tracef(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kmsg != nil {
		fmt.Fprintf(l.kmsg, "<%d>ovroot: %s\n", levelDebug, strings.TrimRight(fmt.Sprintf(format, args...), "\n"))
	}
}

// Errorf logs a failure.
func (l *Logger) Errorf(format string, args ...any) { l.log(levelErr, format, args...) }

// peakRSS reads the VmHWM line ("12345 kB": the most resident memory the
// process ever had) from /proc/<pid>/status (proc(5)).
func peakRSS(status []byte) (string, bool) {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}
