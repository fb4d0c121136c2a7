package boot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containerd/go-dmverity/pkg/dm"
	"golang.org/x/sys/unix"

	"github.com/ovroot/ovroot/verity"
)

// verityDMName is the device-mapper name of the checked root.
const verityDMName = "ovroot-root"

// OpenVerity maps dev through the kernel's verity target with the hash
// tree v describes (github.com/containerd/go-dmverity's device-mapper
// ioctls: create, load the table, resume), then reads the mapped device
// whole, so that every block is checked against the tree before anything
// is mounted from it. It returns the mapped device's node; on an error no
// mapping is left.
func (LinuxSys) OpenVerity(dev string, v verity.Info) (node string, err error) {
	if f, err := os.Open(dev); err == nil {
		ok := verity.HasSuperblock(f, v)
		f.Close()
		if !ok {
			return "", fmt.Errorf("no verity superblock at byte %d of %s: the partition does not hold the root the command line's %s= describes", v.HashOffset(), dev, verity.CmdlineParam)
		}
	}
	c, err := dm.Open()
	if err != nil {
		return "", fmt.Errorf("device-mapper control: %w (are dm_mod and dm_verity in the image's modules?)", err)
	}
	defer c.Close()
	c.RemoveDevice(verityDMName) // left by an earlier attempt of this boot
	devno, err := c.CreateDevice(verityDMName)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			if rerr := c.RemoveDevice(verityDMName); rerr != nil {
				err = fmt.Errorf("%w (and removing the mapping: %v)", err, rerr)
			}
		}
	}()
	if err := c.LoadTable(verityDMName, []dm.Target{{Length: v.Sectors(), Type: "verity", Params: v.Table(dev)}}); err != nil {
		return "", fmt.Errorf("%w (verity table: %s)", err, v.Table(dev))
	}
	if err := c.SuspendDevice(verityDMName, false); err != nil {
		return "", err
	}
	node = fmt.Sprintf("/dev/dm-%d", unix.Minor(devno))
	if err := waitNode(node, 2*time.Second); err != nil {
		return "", err
	}
	if err := readWhole(node, dev, v); err != nil {
		return "", err
	}
	return node, nil
}

// waitNode waits for devtmpfs to make node.
func waitNode(node string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(node); err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readWhole reads every block of the verity device; a block whose hash
// does not match the tree fails its read with EIO, and is named. dm-verity
// answers EIO for a block the partition itself cannot read as well, so
// that block is read again from dev (the partition) to say which it was.
func readWhole(node, dev string, v verity.Info) error {
	f, err := os.Open(node)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		if errors.Is(err, unix.EIO) {
			bad := firstBadBlock(f, off, int64(len(buf)))
			if rerr := readRaw(dev, bad); rerr != nil {
				return fmt.Errorf("cannot read data block %d from %s: %w (the storage is failing)", bad, dev, rerr)
			}
			return fmt.Errorf("data block %d does not match the hash tree (root hash %x): the root was changed or the flash is failing", bad, v.RootHash)
		}
		off += int64(n)
		if err == io.EOF || off >= int64(v.DataBlocks)*verity.BlockSize {
			if off < int64(v.DataBlocks)*verity.BlockSize {
				return fmt.Errorf("verity device %s ends at byte %d, before its %d blocks", node, off, v.DataBlocks)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s at byte %d: %w", node, off, err)
		}
	}
}

// readRaw reads block n of the partition dev itself.
func readRaw(dev string, n int64) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.ReadAt(make([]byte, verity.BlockSize), n*verity.BlockSize)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// firstBadBlock finds the first block in [off, off+n) whose read fails.
func firstBadBlock(f *os.File, off, n int64) int64 {
	b := make([]byte, verity.BlockSize)
	for o := off; o < off+n; o += verity.BlockSize {
		if _, err := f.ReadAt(b, o); err != nil && !errors.Is(err, io.EOF) {
			return o / verity.BlockSize
		}
	}
	return off / verity.BlockSize
}

// hexShort is a root hash for a log line.
func hexShort(b []byte) string {
	s := fmt.Sprintf("%x", b)
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return strings.ToLower(s)
}
