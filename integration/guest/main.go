// Command guest is the /sbin/init of the QEMU test images: a tiny agent
// that reads one command per line from the console, runs it, and frames the
// answer so the host test can read it back:
//
//	GUEST-OUT
//	...output...
//	GUEST-DONE rc=0
//
// It is built for the target arch by the integration tests and never ships
// on a device.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ovroot/ovroot/internal/manifest"
	"golang.org/x/sys/unix"
)

// exitAtOnce in a root makes the agent exit as soon as it starts: a root
// whose init dies, which the kernel answers with a panic (and, with
// panic=, a reboot).
const exitAtOnce = "/etc/ovroot-test/exit-at-once"

// hangMarker in a root makes the agent hang forever.
const hangMarker = "/etc/ovroot-test/hang"

// healthResult, in a root, is what the agent answers when ovroot runs it
// as a health check (a copy in /etc/ovroot/health.d, started with
// OVROOT_HEALTH=1): "ok", or "fail: why".
const healthResult = "/etc/ovroot-test/health"

func main() {
	if os.Getenv("OVROOT_HEALTH") == "1" {
		data, _ := os.ReadFile(healthResult)
		if why, failed := strings.CutPrefix(strings.TrimSpace(string(data)), "fail:"); failed {
			fmt.Fprintln(os.Stderr, strings.TrimSpace(why))
			os.Exit(1)
		}
		fmt.Println("ok")
		return
	}
	if _, err := os.Stat(hangMarker); err == nil {
		// A root that hangs: never confirms, never fails, never reboots.
		// (A sleep loop: select{} in PID 1 would be a Go crash.)
		fmt.Println("GUEST: hanging (" + hangMarker + ")")
		for {
			time.Sleep(time.Hour)
		}
	}
	if _, err := os.Stat(exitAtOnce); err == nil {
		fmt.Println("GUEST: exiting at once (" + exitAtOnce + ")")
		os.Exit(1)
	}
	quietConsole()
	fmt.Printf("GUEST: ready pid=%d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		fmt.Println("GUEST-OUT")
		if err := run(os.Stdout, strings.Fields(line)); err != nil {
			fmt.Printf("\nGUEST-DONE rc=1 err=%v\n", err)
			continue
		}
		fmt.Println("\nGUEST-DONE rc=0")
	}
	// The console closed: nothing more will come. Power off rather than
	// exit, which would panic the kernel.
	powerOff()
}

// quietConsole turns off the tty echo so commands the host types do not
// come back mixed into the answers.
func quietConsole() {
	t, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		return
	}
	t.Lflag &^= unix.ECHO | unix.ECHONL
	unix.IoctlSetTermios(0, unix.TCSETS, t)
}

func run(w io.Writer, args []string) error {
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	switch args[0] {
	case "cat":
		data, err := os.ReadFile(arg(1))
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	case "mounts":
		data, err := os.ReadFile("/proc/mounts")
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	case "write": // write PATH TEXT...: durable (file and directory fsync'd)
		return writeDurably(arg(1), strings.Join(args[2:], " ")+"\n")
	case "rm":
		return os.RemoveAll(arg(1))
	case "stat": // stat PATH: type and device numbers, without following links
		var st unix.Stat_t
		if err := unix.Lstat(arg(1), &st); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s type=%s perm=%04o rdev=%d:%d size=%d\n", arg(1), typeName(st.Mode),
			st.Mode&0o7777, unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), st.Size)
		return nil
	case "efivar": // efivar NAME: a systemd-boot variable (UTF-16 string), efivarfs mounted if need be
		return printEFIVar(w, arg(1))
	case "statfs": // statfs PATH: the filesystem's size and free space in bytes
		var st unix.Statfs_t
		if err := unix.Statfs(arg(1), &st); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s size=%d avail=%d\n", arg(1), int64(st.Blocks)*int64(st.Bsize), int64(st.Bavail)*int64(st.Bsize))
		return nil
	case "exists":
		_, err := os.Lstat(arg(1))
		fmt.Fprintf(w, "%s exists=%v\n", arg(1), err == nil)
		return nil
	case "manifest": // manifest DIR: entry count and digest
		entries, err := manifest.Walk(arg(1), nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "manifest entries=%d digest=%s\n", len(entries), manifest.Digest(entries))
		return nil
	case "manifest-full":
		entries, err := manifest.Walk(arg(1), nil)
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, manifest.Text(entries))
		return err
	case "manifest-v2", "manifest-full-v2": // DIR [SKIP...]: with owners, xattrs, hard links
		// Left out: the subtrees named by SKIP (relative to DIR) and, for
		// the merged root, the mount points.
		skips := map[string]bool{}
		for _, s := range args[2:] {
			skips[s] = true
		}
		skip := func(rel string) bool {
			return skips[rel] || (arg(1) == "/" && mountPoint[strings.SplitN(rel, "/", 2)[0]])
		}
		entries, err := manifest.WalkFull(arg(1), skip)
		if err != nil {
			return err
		}
		if args[0] == "manifest-v2" {
			fmt.Fprintf(w, "manifest-v2 entries=%d digest=%s\n", len(entries), manifest.Digest(entries))
			return nil
		}
		_, err = io.WriteString(w, manifest.Text(entries))
		return err
	case "exec": // exec PROGRAM ARGS...: run a program of the image
		cmd := exec.Command(arg(1), args[2:]...)
		cmd.Stdout, cmd.Stderr = w, w
		return cmd.Run()
	case "poweroff":
		powerOff()
		return nil
	case "diff-root": // the merged root against /rom, mount points left out
		skip := func(rel string) bool { return mountPoint[strings.SplitN(rel, "/", 2)[0]] }
		merged, err := manifest.Walk("/", skip)
		if err != nil {
			return err
		}
		rom, err := manifest.Walk("/rom", skip)
		if err != nil {
			return err
		}
		diff := manifest.Diff(rom, merged)
		if len(diff) == 0 {
			fmt.Fprintf(w, "root equals rom: %d entries\n", len(rom))
			return nil
		}
		fmt.Fprintf(w, "root differs from rom in %d entries:\n%s\n", len(diff), strings.Join(diff, "\n"))
		return nil
	case "fill": // fill N: N files in a new directory tree, synced
		n, err := strconv.Atoi(arg(1))
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			p := fmt.Sprintf("/var/fill/d%02d/f%04d.txt", i/100, i)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
				return err
			}
		}
		unix.Sync()
		return nil
	case "net-up": // net-up IFACE ADDR MASK: address the interface and bring it up (QEMU user networking: 10.0.2.15 255.255.255.0)
		return netUp(w, arg(1), arg(2), arg(3))
	case "setxattr": // setxattr PATH NAME VALUE
		return unix.Setxattr(arg(1), arg(2), []byte(arg(3)), 0)
	case "getxattr": // getxattr PATH NAME: the value, or "none"
		buf := make([]byte, 256)
		n, err := unix.Getxattr(arg(1), arg(2), buf)
		if err != nil {
			fmt.Fprintf(w, "none (%v)\n", err)
			return nil
		}
		fmt.Fprintf(w, "%s\n", buf[:n])
		return nil
	case "fill-disk": // fill-disk PATH: write PATH until the filesystem is full
		f, err := os.OpenFile(arg(1), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		chunk := make([]byte, 1<<20)
		var n int64
		for {
			m, err := f.Write(chunk)
			n += int64(m)
			if err != nil {
				break
			}
		}
		// Then small writes, to use the last blocks too, again after each
		// sync: ext4 gives back blocks it held for delayed allocation when
		// the data is written out.
		for round := 0; round < 20; round++ {
			added := 0
			for {
				// 1 KiB: the smallest ext4 block.
				if _, err := f.Write(chunk[:1024]); err != nil {
					break
				}
				added += 1024
			}
			f.Sync()
			n += int64(added)
			if added == 0 {
				break
			}
		}
		f.Close()
		unix.Sync()
		fmt.Fprintf(w, "filled %d bytes\n", n)
		return nil
	case "writer": // writer DIR sync|nosync: write f000000, f000001, ... until killed
		dir, durable := arg(1), arg(2) == "sync"
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		for i := 0; ; i++ {
			name := filepath.Join(dir, fmt.Sprintf("f%06d", i))
			f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			if _, err := f.Write(pattern(i)); err != nil {
				return err
			}
			if durable {
				if err := f.Sync(); err != nil {
					return err
				}
			}
			f.Close()
			if durable {
				if err := d.Sync(); err != nil {
					return err
				}
				fmt.Fprintf(w, "DURABLE %d\n", i)
			}
		}
	case "verify-writer": // verify-writer DIR N: files 0..N-1 must be whole; others a prefix or empty
		dir := arg(1)
		n, err := strconv.Atoi(arg(2))
		if err != nil {
			return err
		}
		entries, err := os.ReadDir(dir)
		if err != nil && n > 0 {
			return err
		}
		var lost, garbage []string
		for i := 0; i < n; i++ {
			data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%06d", i)))
			if err != nil || !bytes.Equal(data, pattern(i)) {
				lost = append(lost, fmt.Sprintf("f%06d", i))
			}
		}
		for _, e := range entries {
			var i int
			if _, err := fmt.Sscanf(e.Name(), "f%06d", &i); err != nil {
				continue
			}
			data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			if !bytes.HasPrefix(pattern(i), data) {
				garbage = append(garbage, e.Name())
			}
		}
		fmt.Fprintf(w, "checked %d lost %d garbage %d files %d %s %s\n", n, len(lost), len(garbage), len(entries), strings.Join(lost, ","), strings.Join(garbage, ","))
		return nil
	case "mkdir":
		return os.MkdirAll(arg(1), 0o755)
	case "kmsg": // kmsg TEXT: the kernel log records (/dev/kmsg) that contain TEXT
		return kmsg(w, strings.Join(args[1:], " "))
	case "wait-empty": // wait-empty DIR SECONDS: poll until DIR has no entries
		secs, err := strconv.Atoi(arg(2))
		if err != nil {
			return err
		}
		return waitEmpty(w, arg(1), time.Duration(secs)*time.Second)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// kmsg prints the message of each kernel log record that contains substr,
// one per line (a record is "level,seq,time,flags;message").
func kmsg(w io.Writer, substr string) error {
	// Raw syscalls: an os.File would wait in Go's poller instead of
	// returning EAGAIN at the end of the log.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/kmsg: %w", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return nil // read everything there is
		}
		if errors.Is(err, unix.EPIPE) {
			continue // records overwritten while reading: go on from the next
		}
		if err != nil {
			return fmt.Errorf("read /dev/kmsg: %w", err)
		}
		_, msg, _ := strings.Cut(string(buf[:n]), ";")
		msg, _, _ = strings.Cut(msg, "\n")
		if strings.Contains(msg, substr) {
			fmt.Fprintln(w, msg)
		}
	}
}

func writeDurably(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// pattern is the content of the writer's file i: 16 KiB that differ per file.
func pattern(i int) []byte {
	line := fmt.Sprintf("file %06d of the power-cut writer\n", i)
	return bytes.Repeat([]byte(line), 16384/len(line))
}

// mountPoint are the top-level directories where the merged root shows
// other filesystems.
var mountPoint = map[string]bool{"proc": true, "sys": true, "dev": true, "run": true, "tmp": true, "rom": true, "overlay": true}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFIFO:
		return "fifo"
	}
	return "other"
}

// powerOff shuts down as a system init does: write everything back, make
// the root and the data filesystem read-only so the journal is clean (the
// host runs e2fsck -fn on it afterwards), then power off.
func powerOff() {
	// As a system init does: stop every other process first (the init's
	// background trash collector may be writing), so the remounts succeed.
	unix.Kill(-1, unix.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	unix.Kill(-1, unix.SIGKILL)
	time.Sleep(100 * time.Millisecond)
	unix.Sync()
	for _, m := range []string{"/", "/overlay"} {
		if err := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			fmt.Printf("GUEST: remount %s read-only: %v\n", m, err)
		}
	}
	unix.Sync()
	fmt.Println("GUEST: powering off")
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// waitEmpty polls dir every 200 ms until it holds nothing, for at most
// limit; the wait happens here, in the guest, so the host asserts no timing.
func waitEmpty(w io.Writer, dir string, limit time.Duration) error {
	start := time.Now()
	for {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			fmt.Fprintf(w, "%s empty\n", dir)
			return nil
		}
		if time.Since(start) >= limit {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			return fmt.Errorf("%s still holds %d entries after %s: %s", dir, len(entries), limit, strings.Join(names, " "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// loaderVendor is systemd-boot's vendor GUID for its variables
// (LoaderEntrySelected, LoaderInfo, ...; systemd's BOOT_LOADER_INTERFACE).
const loaderVendor = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// printEFIVar prints a UEFI variable systemd-boot set, read through
// efivarfs (4 bytes of attributes, then the value: a NUL-terminated
// UTF-16LE string).
func printEFIVar(w io.Writer, name string) error {
	const dir = "/sys/firmware/efi/efivars"
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		return fmt.Errorf("not booted by UEFI: %w", err)
	}
	if err := unix.Mount("efivarfs", dir, "efivarfs", unix.MS_RDONLY, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount efivarfs on %s: %w", dir, err)
	}
	data, err := os.ReadFile(filepath.Join(dir, name+"-"+loaderVendor))
	if err != nil {
		return err
	}
	if len(data) < 4 {
		return fmt.Errorf("%s: %d bytes", name, len(data))
	}
	var s []rune
	for i := 4; i+1 < len(data); i += 2 {
		c := rune(data[i]) | rune(data[i+1])<<8
		if c == 0 {
			break
		}
		s = append(s, c)
	}
	fmt.Fprintf(w, "%s\n", string(s))
	return nil
}

// netUp gives iface an IPv4 address and mask and brings it up, with the
// ioctls ifconfig uses: the host's servers are on the same /24 (QEMU's
// 10.0.2.2), so no route is needed.
func netUp(w io.Writer, iface, addr, mask string) error {
	ip, nm := net.ParseIP(addr).To4(), net.ParseIP(mask).To4()
	if ip == nil || nm == nil {
		return fmt.Errorf("net-up: %q %q: want IPv4 address and mask", addr, mask)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// The driver may still be probing: wait for the interface.
	var ifr *unix.Ifreq
	for i := 0; ; i++ {
		if ifr, err = unix.NewIfreq(iface); err != nil {
			return err
		}
		if err = unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err == nil {
			break
		}
		if i == 50 {
			return fmt.Errorf("net-up: no interface %s: %w", iface, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	flags := ifr.Uint16()
	for _, c := range []struct {
		req uint
		ip  net.IP
	}{{unix.SIOCSIFADDR, ip}, {unix.SIOCSIFNETMASK, nm}} {
		r, _ := unix.NewIfreq(iface)
		if err := r.SetInet4Addr(c.ip); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, c.req, r); err != nil {
			return fmt.Errorf("net-up %s %s: %w", iface, c.ip, err)
		}
	}
	r, _ := unix.NewIfreq(iface)
	r.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, r); err != nil {
		return fmt.Errorf("net-up %s: up: %w", iface, err)
	}
	fmt.Fprintf(w, "%s up: %s/%s\n", iface, ip, nm)
	return nil
}
