package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// keyBytes is the size of the key state bitmap: KEY_MAX/8 + 1.
const keyBytes = 0x2ff/8 + 1

// eviocgkey is EVIOCGKEY(len): _IOC(_IOC_READ, 'E', 0x18, len).
const eviocgkey = 2<<30 | keyBytes<<16 | 'E'<<8 | 0x18

// keyDown reports whether code is down on the open evdev device.
func keyDown(f *os.File, code int) (bool, error) {
	var bits [keyBytes]byte
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(eviocgkey), uintptr(unsafe.Pointer(&bits[0])))
	if errno != 0 {
		return false, errno
	}
	return keyBit(bits[:], code), nil
}

// WaitForKey polls the key state (EVIOCGKEY) of the device, or of every
// /dev/input/event* as they appear, every 20 ms, and lets keyHold decide.
// Polling the state rather than reading events sees a button already held
// when the window opens.
func (LinuxSys) WaitForKey(device string, code int, hold, window time.Duration) (bool, error) {
	const poll = 20 * time.Millisecond
	open := map[string]*os.File{}
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	var lastErr error
	watch := keyHold{hold: hold, window: window}
	for {
		paths := []string{device}
		if device == "" {
			paths, _ = filepath.Glob("/dev/input/event*")
			sort.Strings(paths)
		}
		down := false
		for _, p := range paths {
			f, ok := open[p]
			if !ok {
				var err error
				if f, err = os.Open(p); err != nil {
					lastErr = err
					continue
				}
				open[p] = f
			}
			d, err := keyDown(f, code)
			if err != nil {
				lastErr = fmt.Errorf("%s: %w", p, err)
				continue
			}
			down = down || d
		}
		if done, held := watch.see(time.Now(), down); done {
			if held {
				return true, nil
			}
			if len(open) == 0 && lastErr == nil {
				lastErr = fmt.Errorf("no input device (/dev/input/event*): is the evdev module in the image's modules?")
			}
			if len(open) > 0 {
				lastErr = nil
			}
			return false, lastErr
		}
		time.Sleep(poll)
	}
}

// ReadConsoleLine waits up to timeout for a line on standard input (the
// console). Input is left in canonical mode, so the line arrives on Enter.
func (LinuxSys) ReadConsoleLine(timeout time.Duration) (string, error) {
	fds := []unix.PollFd{{Fd: 0, Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return "", nil
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", err
		}
		if n == 0 {
			return "", nil
		}
		buf := make([]byte, 256)
		m, err := unix.Read(0, buf)
		if err != nil {
			return "", err
		}
		return string(buf[:m]), nil
	}
}
