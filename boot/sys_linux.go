package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
	"github.com/u-root/u-root/pkg/kmodule"
	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"
)

// LinuxSys is the real Sys: it runs as PID 1 in the initramfs.
type LinuxSys struct{}

var _ Sys = LinuxSys{}

// Mount is mount(2). Its error names the source, the filesystem type, the
// flags and the options, as u-root's pkg/mount does, so the console says
// exactly which mount failed.
func (LinuxSys) Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return &os.PathError{Op: "mount " + describeMount(source, fstype, flags, data) + " on", Path: target, Err: err}
	}
	return nil
}

// Unmount detaches target; not mounted is not an error.
func (LinuxSys) Unmount(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// LoadModule loads a module file with finit_module(2). EEXIST means it is
// loaded already (or built in under another name): fine.
func (LinuxSys) LoadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := kmodule.FileInit(f, "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// BlockDevices reads /sys/class/block. A partition's disk is the directory
// its sysfs node sits in (…/block/vda/vda3).
func (LinuxSys) BlockDevices() ([]BlockDev, error) {
	const dir = "/sys/class/block"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var devs []BlockDev
	for _, e := range entries {
		uevent, err := os.ReadFile(filepath.Join(dir, e.Name(), "uevent"))
		if err != nil {
			continue // gone since ReadDir
		}
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		d, err := parseUevent(uevent, filepath.Base(filepath.Dir(target)))
		if err != nil {
			continue
		}
		devs = append(devs, d)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	return devs, nil
}

// Probe reads the start of dev (see Probe).
func (LinuxSys) Probe(dev string) (Content, error) {
	f, err := os.Open(dev)
	if err != nil {
		return ContentUnknown, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return ContentUnknown, err
	}
	return Probe(f, size)
}

// Format makes an ext4 filesystem with mkfsExt4, so the initramfs needs no
// mke2fs and no C libraries. The result is checked by the QEMU tests with the
// host's e2fsck -fn after the guest powers off.
func (LinuxSys) Format(dev, fstype, label string, max int64) error {
	if fstype != "ext4" {
		return fmt.Errorf("formatting %s is not supported", fstype)
	}
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if max > 0 && max < size {
		size = max
	}
	return makeExt4(f, size, label)
}

// SwitchRoot checks that init exists in the new root before anything is
// torn down (after the old root is deleted there is no way back), then uses
// u-root's switch_root: move /dev /proc /sys /run, chroot, free the
// initramfs, exec init.
func (LinuxSys) SwitchRoot(newRoot, init string) error {
	if err := checkInit(newRoot, init); err != nil {
		return err
	}
	return mount.SwitchRoot(newRoot, init)
}

// checkInit resolves init inside newRoot (RESOLVE_IN_ROOT, so an absolute
// symlink such as /sbin/init -> /bin/busybox resolves in the new root, not
// in the initramfs) and requires an executable regular file.
func checkInit(newRoot, init string) error {
	root, err := os.Open(newRoot)
	if err != nil {
		return err
	}
	defer root.Close()
	fd, err := unix.Openat2(int(root.Fd()), init, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return fmt.Errorf("init %s in the new root: %w", init, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("init %s in the new root: %w", init, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		return fmt.Errorf("init %s in the new root is not an executable file (mode %o)", init, st.Mode)
	}
	return nil
}

// StartTrashCollector runs this program again as a background child with
// the trash directory as its working directory (fd 3, fchdir'd), so it
// keeps deleting after switch_root has moved the mount; it exits when done.
func (LinuxSys) StartTrashCollector(trash string) error {
	return startBackground(trash, collectorEnv+"=1")
}

// startBackground runs this program again as a background child in its
// own session, with env as its whole environment and the directory dir
// open as its fd 3: it outlives switch_root, and reaches dir after it.
func startBackground(dir string, env ...string) error {
	return startBackgroundFiles(dir, nil, env...)
}

// startBackgroundFiles is startBackground with more open files for the
// process, from fd 4 on.
func startBackgroundFiles(dir string, files []*os.File, env ...string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = env
	cmd.ExtraFiles = append([]*os.File{d}, files...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

const collectorEnv = "OVROOT_COLLECT_TRASH"

// IsTrashCollector reports whether this process is the background trash
// collector that StartTrashCollector started, not PID 1.
func IsTrashCollector() bool { return os.Getenv(collectorEnv) == "1" && os.Getpid() != 1 }

// CollectTrash is the background trash collector's whole life: it deletes
// the trash (its fd 3) and exits.
func CollectTrash() {
	start := time.Now()
	unix.Setpriority(unix.PRIO_PROCESS, 0, 19)
	if err := unix.Fchdir(3); err != nil {
		fmt.Fprintf(os.Stderr, "ovroot: trash collector: %v\n", err)
		os.Exit(1)
	}
	n, err := reset.CollectTrash(".")
	if err != nil {
		fmt.Fprintf(os.Stderr, "ovroot: trash collector: removed %d retired upper and work trees, then: %v (tried again next boot)\n", n, err)
		os.Exit(1)
	}
	unix.Sync()
	fmt.Fprintf(os.Stderr, "ovroot: removed %d retired upper and work trees from the data partition in %d ms\n", n, time.Since(start).Milliseconds())
	os.Exit(0)
}

// Repair runs e2fsck -f -p; when it cannot open the filesystem (exit code 8,
// e.g. a wiped primary superblock) and a backup superblock exists, it runs
// again from that backup. Exit codes below 4 mean the filesystem is clean
// or was fixed (e2fsck(8)).
func (LinuxSys) Repair(dev, fstype string) (string, error) {
	if fstype != "ext4" {
		return "", fmt.Errorf("no repair tool for %s", fstype)
	}
	if _, err := os.Stat(layout.E2fsckPath); err != nil {
		return "", fmt.Errorf("no e2fsck in the initramfs (image key e2fsck): %w", err)
	}
	var out strings.Builder
	for _, args := range repairAttempts(dev, func() (ext4Backup, bool) {
		f, err := os.Open(dev)
		if err != nil {
			return ext4Backup{}, false
		}
		defer f.Close()
		size, _ := f.Seek(0, io.SeekEnd)
		return findExt4Backup(f, size)
	}) {
		undo, err := nextUndoFile()
		if err != nil {
			return out.String(), err
		}
		cmd := exec.Command(layout.E2fsckPath, append([]string{"-z", undo}, args...)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Env = []string{"PATH=/sbin:/bin"}
		err = cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			return out.String(), err
		}
		if code < 4 {
			return out.String(), nil
		}
		if code&8 == 0 {
			return out.String(), fmt.Errorf("e2fsck %s exited %d: errors left uncorrected", strings.Join(args, " "), code)
		}
		fmt.Fprintf(&out, "e2fsck %s exited %d\n", strings.Join(args, " "), code)
	}
	return out.String(), fmt.Errorf("e2fsck could not repair %s", dev)
}

// errNoRecovery is ReplayJournal's answer for a journal with nothing to
// replay.
var errNoRecovery = errors.New("the journal needs no recovery")

// ReplayJournal runs e2fsck -E journal_only -p when the superblock has
// INCOMPAT_RECOVER (0x4) set.
func (LinuxSys) ReplayJournal(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	sb := make([]byte, 1024)
	_, err = f.ReadAt(sb, ext4SuperblockOffset)
	f.Close()
	if err != nil {
		return "", err
	}
	const incompatRecover = 0x4
	if s, err := parseExt4Superblock(sb); err != nil || !s.valid() || binary.LittleEndian.Uint32(sb[0x60:])&incompatRecover == 0 {
		return "", errNoRecovery
	}
	if _, err := os.Stat(layout.E2fsckPath); err != nil {
		return "", fmt.Errorf("no e2fsck in the initramfs (image key e2fsck): %w", err)
	}
	undo, err := nextUndoFile()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(layout.E2fsckPath, "-z", undo, "-E", "journal_only", "-p", dev)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/sbin:/bin"}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("e2fsck -E journal_only -p %s: %w", dev, err)
	}
	return out.String(), nil
}

// undoDir holds the undo files of this boot's e2fsck runs, in the
// initramfs (RAM): never on the partition they undo, and gone with the
// initramfs at switch_root.
const undoDir = "/.ovroot-undo"

// nextUndoFile is the path for the next e2fsck run's undo file.
func nextUndoFile() (string, error) {
	if err := os.MkdirAll(undoDir, 0o700); err != nil {
		return "", fmt.Errorf("undo files: %w", err)
	}
	ents, err := os.ReadDir(undoDir)
	if err != nil {
		return "", fmt.Errorf("undo files: %w", err)
	}
	return filepath.Join(undoDir, fmt.Sprintf("%03d.e2undo", len(ents)+1)), nil
}

// UndoFsck applies or forgets the undo files of this boot's e2fsck runs.
func (LinuxSys) UndoFsck(dev string, apply bool) (string, error) {
	ents, err := os.ReadDir(undoDir)
	if errors.Is(err, os.ErrNotExist) || len(ents) == 0 {
		return "no e2fsck run wrote to " + dev, nil
	} else if err != nil {
		return "", err
	}
	if !apply {
		return fmt.Sprintf("kept the changes of %d e2fsck runs", len(ents)), os.RemoveAll(undoDir)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var logs []*undoLog
	for _, e := range ents { // ReadDir sorts: oldest run first
		f, err := os.Open(filepath.Join(undoDir, e.Name()))
		if err != nil {
			return "", err
		}
		files = append(files, f)
		fi, err := f.Stat()
		if err != nil {
			return "", err
		}
		u, err := parseUndo(f, fi.Size())
		if err != nil {
			return "", fmt.Errorf("undo file of e2fsck run %d: %w (nothing written back)", len(logs)+1, err)
		}
		logs = append(logs, u)
	}
	d, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer d.Close()
	var n int64
	for i := len(logs) - 1; i >= 0; i-- {
		if err := logs[i].rollback(d); err != nil {
			return "", fmt.Errorf("write back e2fsck run %d's changes: %w", i+1, err)
		}
		n += logs[i].bytes()
	}
	if same, err := logs[0].sameBytes(d); err != nil || !same {
		return "", fmt.Errorf("read back after the rollback: %v (same bytes: %v)", err, same)
	}
	os.RemoveAll(undoDir)
	return fmt.Sprintf("wrote back the %d bytes %d e2fsck runs had changed: %s is as it was before them", n, len(logs), dev), nil
}

// repairAttempts are the e2fsck runs to try in order: preen mode, then
// preen mode from a backup superblock if one is found.
func repairAttempts(dev string, backup func() (ext4Backup, bool)) [][]string {
	// -f: the kernel refused the filesystem, so a superblock that says
	// "clean" (a backup one always does) must not end the check early.
	attempts := [][]string{{"-f", "-p", dev}}
	if b, ok := backup(); ok {
		attempts = append(attempts, []string{"-f", "-p", "-b", strconv.FormatInt(b.Block, 10), "-B", strconv.FormatInt(b.BlockSize, 10), dev})
	}
	return attempts
}

// FreeBytes is statfs's available blocks times the block size.
func (LinuxSys) FreeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// CanWrite writes n bytes to a scratch file in dir, syncs and removes it.
// statfs alone cannot tell: ext4 keeps clusters back that even root's
// writes cannot use, and counts them as free.
func (LinuxSys) CanWrite(dir string, n int64) (bool, error) {
	p := filepath.Join(dir, layout.SpaceProbeFile)
	defer os.Remove(p)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if errors.Is(err, unix.ENOSPC) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, n)); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return false, nil
		}
		return false, err
	}
	if err := f.Sync(); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
