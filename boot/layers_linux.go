package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/go-dmverity/pkg/dm"
	"golang.org/x/sys/unix"

	"github.com/ovroot/ovroot/layout"
)

// stackLayers turns the root mounted at /rom into the stack of layers it
// holds (layout/layers.go), when it holds a layer table: every layer, the
// bottom one too, is mapped from its bytes of src (the root partition, or
// its dm-verity device: the layers are checked with the root) and mounted
// read-only at LayersDir/<name>, and /rom becomes a read-only overlay of
// them, top layer first: the merged factory tree. A root without a table
// is left as it is. On an error nothing of the stack stays mounted or
// mapped, /rom included, and the error names the layer.
func (b *Boot) stackLayers(src string) (err error) {
	data, err := os.ReadFile(b.path(filepath.Join(layout.RomDir, layout.LayersFile)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	// What was mapped and mounted is undone on an error: a mapping left
	// would hold the partition, and the next attempt could not mount it.
	defer func() {
		if err != nil {
			b.Sys.Unmount(layout.RomDir)
			b.undoLayers()
		}
	}()
	if err != nil {
		return fmt.Errorf("root %s: read its layer table /%s: %w", src, layout.LayersFile, err)
	}
	t, err := layout.ParseLayerTable(data)
	if err != nil {
		return fmt.Errorf("root %s: %w", src, err)
	}
	bottomBytes, err := b.Sys.SquashfsBytes(src)
	if err != nil {
		return fmt.Errorf("root %s: the bottom layer %s: %w", src, t.Layers[0].Name, err)
	}
	start := layout.LayersStart(bottomBytes)

	// The bottom squashfs was mounted from src itself, to read the table.
	// A mounted device cannot be mapped (the mount holds it exclusively;
	// device-mapper's mappings share their claim), so it is unmounted and
	// every layer, the bottom one too, is mounted from a mapping of src.
	if err := b.Sys.Unmount(layout.RomDir); err != nil {
		return fmt.Errorf("root %s: unmount the bottom layer from %s to map it: %w", src, layout.RomDir, err)
	}
	var lowers []string
	for i, l := range t.Layers {
		off, size := start+l.Offset, l.Size
		if i == 0 {
			off, size = 0, start
		}
		node, err := b.Sys.MapLayer(src, l.Name, off, size)
		if err != nil {
			return fmt.Errorf("layer %s (bytes %d to %d of root %s): %w", l.Name, off, off+size, src, err)
		}
		b.state.Layers = append(b.state.Layers, layout.LayerState{Name: l.Name, Device: node, Offset: off, Size: size})
		dir := filepath.Join(layout.LayersDir, l.Name)
		b.mkdir(dir)
		if err := b.Sys.Mount(node, dir, "squashfs", unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("layer %s: mount %s (bytes %d to %d of root %s) on %s: %w", l.Name, node, off, off+size, src, dir, err)
		}
		lowers = append([]string{dir}, lowers...)
	}
	b.lowers = strings.Join(lowers, ":")
	// No upper: overlayfs mounts the lowers read-only, merged.
	if err := b.Sys.Mount("overlay", layout.RomDir, "overlay", unix.MS_RDONLY, "lowerdir="+b.lowers); err != nil {
		return fmt.Errorf("stack the layers on %s (lowerdir=%s): %w", layout.RomDir, b.lowers, err)
	}
	names := make([]string, len(t.Layers))
	for i, l := range slices.Backward(t.Layers) {
		names[len(t.Layers)-1-i] = l.Name
	}
	b.Logf("stacked %d layers on %s (top first): %s", len(t.Layers), layout.RomDir, strings.Join(names, ", "))
	return nil
}

// undoLayers unmounts and unmaps the layers of b.state.Layers, top first
// (a layer mapped but not mounted: its unmount is a no-op), and forgets
// them.
func (b *Boot) undoLayers() {
	for _, l := range slices.Backward(b.state.Layers) {
		b.Sys.Unmount(filepath.Join(layout.LayersDir, l.Name))
		b.Sys.UnmapLayer(l.Name)
	}
	b.state.Layers = nil
	b.lowers = ""
}

// lowerDirs is the overlay root's lowerdir: the stacked layers, or /rom.
func (b *Boot) lowerDirs() string {
	if b.lowers != "" {
		return b.lowers
	}
	return layout.RomDir
}

// squashfsBytesUsed reads bytes_used from a squashfs superblock (at byte
// 40, little-endian; magic "hsqs" at byte 0).
func squashfsBytesUsed(r io.ReaderAt) (int64, error) {
	sb := make([]byte, 48)
	if _, err := r.ReadAt(sb, 0); err != nil {
		return 0, fmt.Errorf("read the squashfs superblock: %w", err)
	}
	if string(sb[:4]) != "hsqs" {
		return 0, errors.New("no squashfs superblock at byte 0")
	}
	n := int64(binary.LittleEndian.Uint64(sb[40:]))
	if n <= 0 {
		return 0, fmt.Errorf("squashfs superblock says %d bytes", n)
	}
	return n, nil
}

// SquashfsBytes is the size of the squashfs at the start of dev, from its
// superblock.
func (LinuxSys) SquashfsBytes(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return squashfsBytesUsed(f)
}

// UnmapLayer removes a layer's mapping (MapLayer); a mapping that is not
// there is not an error.
func (LinuxSys) UnmapLayer(name string) error {
	c, err := dm.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.RemoveDevice(layerDMPrefix + name); err != nil && !errors.Is(err, unix.ENXIO) {
		return err
	}
	return nil
}

// layerDMPrefix starts the device-mapper name of each mapped layer.
const layerDMPrefix = "ovroot-layer-"

// MapLayer maps size bytes of dev from byte off as a read-only block
// device of its own (device-mapper's linear target, in dm_mod, which the
// image loads for a stacked root), and returns its node.
func (LinuxSys) MapLayer(dev, name string, off, size int64) (node string, err error) {
	if off%512 != 0 || off < 0 || size <= 0 {
		return "", fmt.Errorf("bytes %d to %d are not a range of 512-byte sectors", off, off+size)
	}
	if fi, err := os.Stat(dev); err == nil && fi.Mode().IsRegular() && off+size > fi.Size() {
		return "", fmt.Errorf("%s ends at byte %d, before the layer's end", dev, fi.Size())
	}
	c, err := dm.Open()
	if err != nil {
		return "", fmt.Errorf("device-mapper control: %w (is dm_mod in the image's modules?)", err)
	}
	defer c.Close()
	dmName := layerDMPrefix + name
	c.RemoveDevice(dmName) // left by an earlier attempt of this boot
	devno, err := c.CreateDevice(dmName)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			c.RemoveDevice(dmName)
		}
	}()
	sectors := uint64(size+511) / 512
	params := fmt.Sprintf("%s %d", dev, off/512)
	if err := c.LoadTable(dmName, []dm.Target{{Length: sectors, Type: "linear", Params: params}}); err != nil {
		// The kernel refuses a range past the device's end here.
		return "", fmt.Errorf("%w (linear table: %d sectors of %s)", err, sectors, params)
	}
	if err := c.SuspendDevice(dmName, false); err != nil {
		return "", err
	}
	node = fmt.Sprintf("/dev/dm-%d", unix.Minor(devno))
	if err := waitNode(node, 2*time.Second); err != nil {
		return "", err
	}
	return node, nil
}
