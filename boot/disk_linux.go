package boot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// linuxDisk is a whole disk opened for its partition table.
type linuxDisk struct {
	*os.File
	name string
	size int64
	ss   int
}

// OpenDisk opens /dev/<name> (a whole disk) for reading and writing, or
// for reading only when the device is read-only (an eMMC's boot areas): its
// GPT can still be looked at, and a write says why it failed.
func (LinuxSys) OpenDisk(name string) (Disk, error) {
	f, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) {
		f, err = os.Open("/dev/" + name)
	}
	if err != nil {
		return nil, err
	}
	d := &linuxDisk{File: f, name: name}
	if d.size, err = f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("size of %s: %w", f.Name(), err)
	}
	if d.ss, err = unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err != nil {
		f.Close()
		return nil, fmt.Errorf("sector size of %s (BLKSSZGET): %w", f.Name(), err)
	}
	return d, nil
}

func (d *linuxDisk) Size() int64     { return d.size }
func (d *linuxDisk) SectorSize() int { return d.ss }

// Flush is fsync(2), which for a block device writes the page cache and
// flushes the disk's volatile cache, then BLKFLSBUF, so what is read next
// comes from the disk.
func (d *linuxDisk) Flush() error {
	if err := d.File.Sync(); err != nil {
		return err
	}
	if err := unix.IoctlSetInt(int(d.Fd()), unix.BLKFLSBUF, 0); err != nil {
		return fmt.Errorf("BLKFLSBUF %s: %w", d.Name(), err)
	}
	return nil
}

// partitionName is the kernel's name of partition n of disk (vda3,
// mmcblk0p3, nvme0n1p3).
func partitionName(disk string, n int) string {
	if disk != "" && disk[len(disk)-1] >= '0' && disk[len(disk)-1] <= '9' {
		return disk + "p" + strconv.Itoa(n)
	}
	return disk + strconv.Itoa(n)
}

// PartitionSize reads /sys/class/block/<part>/size (512-byte units,
// whatever the sector size).
func (d *linuxDisk) PartitionSize(n int) (int64, error) {
	p := filepath.Join("/sys/class/block", partitionName(d.name, n), "size")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return v * 512, nil
}

// blkpgPartition is struct blkpg_partition (include/uapi/linux/blkpg.h).
type blkpgPartition struct {
	Start, Length int64
	Pno           int32
	Devname       [64]byte
	Volname       [64]byte
	_             [4]byte
}

const blkpgIoctl = 0x1269 // BLKPG, _IO(0x12, 105)

// ResizePartition is BLKPG_RESIZE_PARTITION: the partition keeps its
// start, the kernel takes the new length; it works while a filesystem on
// the disk is mounted, unlike BLKRRPART.
func (d *linuxDisk) ResizePartition(n int, start, length int64) error {
	p := blkpgPartition{Start: start, Length: length, Pno: int32(n)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_RESIZE_PARTITION, Datalen: int32(unsafe.Sizeof(p)), Data: (*byte)(unsafe.Pointer(&p))}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.Fd(), blkpgIoctl, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return e
	}
	return nil
}

// Reread is BLKRRPART.
func (d *linuxDisk) Reread() error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.Fd(), unix.BLKRRPART, 0); e != 0 {
		return e
	}
	return nil
}

// ext4IocResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64).
const ext4IocResizeFS = 0x40086610

// GrowFS grows the ext4 mounted at mountpoint from dev to fill dev, with the
// kernel's online resize (Documentation/filesystems/ext4: the resize is
// journaled, so a power cut leaves the old size or a larger one, and the
// next boot goes on from there). from and to are the filesystem's sizes in
// bytes; from == to when there was nothing to do.
func (LinuxSys) GrowFS(dev, mountpoint string) (from, to int64, err error) {
	read := func() (blocks uint64, bs, size int64, err error) {
		f, err := os.Open(dev)
		if err != nil {
			return 0, 0, 0, err
		}
		defer f.Close()
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return 0, 0, 0, err
		}
		sb := make([]byte, 1024)
		if _, err := f.ReadAt(sb, ext4SuperblockOffset); err != nil {
			return 0, 0, 0, fmt.Errorf("read the superblock of %s: %w", dev, err)
		}
		blocks, bs, err = ext4Size(sb)
		return blocks, bs, size, err
	}
	blocks, bs, size, err := read()
	if err != nil {
		return 0, 0, err
	}
	from = int64(blocks) * bs
	want := uint64(size / bs)
	if want <= blocks {
		return from, from, nil
	}
	dir, err := os.Open(mountpoint)
	if err != nil {
		return from, from, err
	}
	defer dir.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, dir.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&want))); e != 0 {
		return from, from, fmt.Errorf("EXT4_IOC_RESIZE_FS on %s to %d blocks: %w", mountpoint, want, e)
	}
	blocks, bs, _, err = read()
	if err != nil {
		return from, from, err
	}
	return from, int64(blocks) * bs, nil
}
