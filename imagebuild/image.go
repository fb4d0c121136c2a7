package imagebuild

import (
	"aead.dev/minisign"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/diskfs/go-diskfs/backend/file"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/tmpdir"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
	"github.com/ovroot/ovroot/verity"
	"github.com/ovroot/ovroot/verity/tree"
)

// Spec is what goes into an image.
type Spec struct {
	Arch      layout.Arch
	Kernel    string // host path; copied as layout.KernelFile
	Initramfs string // host path; copied as layout.InitrdFile
	Cmdline   string
	// Loader is how firmware boots the image (layout.Loader); "" = none.
	Loader layout.Loader
	// LoaderFile is the UEFI loader binary (systemd-boot, a vendor's, a
	// shim), for LoaderUEFI.
	LoaderFile string
	Rootfs     string // directory, tarball or container image (MakeSquashfsFor)
	// Layers are OCI layer tarballs applied on top of the rootfs in order
	// (MakeSquashfsLayers).
	Layers        []string
	Compression   string // mksquashfs -comp
	BootSize      int64
	RootSize      int64 // 0 = the squashfs rounded up to 1 MiB
	DataSize      int64
	KernelRelease string
	// Slots is 1 (one root partition) or 2 (A/B: rootfs_a holds the
	// squashfs, rootfs_b waits for the first upgrade); 0 = 1.
	Slots int
	Board string // the hardware the image is for (ovroot.json, bundles)
	Tries int    // trial boots a new slot gets (bundles)
	// Bundle, when set, is where an update bundle of the same root,
	// kernel and initramfs is written (two-slot images only).
	Bundle string
	// Version is the release version a bundle's manifest carries ("" =
	// "0"); SignKey signs the bundle (nil: unsigned).
	Version string
	SignKey *minisign.PrivateKey
	// Verity appends a dm-verity hash tree to the squashfs and adds
	// ovroot.verity= with its root hash to the command line.
	Verity bool
	Add    []Addition // host files added to the root unless it has them
	// Pending, when set, is waited for once the squashfs is made and
	// before Initramfs is read; it returns the kernel release to record
	// when KernelRelease is "". BuildImage makes the initramfs with it
	// while mksquashfs runs (they need nothing of each other). An error
	// from it fails the build.
	Pending  func() (kernelRelease string, err error)
	buildID  string // set by Build for a two-slot image
	Log      func(format string, args ...any)
	Progress io.Writer // a terminal for status lines during long steps; nil = quiet
	// Stack, instead of Rootfs and Layers, are the layers of a stacked
	// root, bottom first (makeStack).
	Stack []config.Layer
	// CheckTree, when set, is called with the directory mksquashfs will
	// pack (the rootfs directory, or what its tarball or image unpacked
	// to) before it runs; an error stops the build.
	// (the layers' directories, top first, for a stacked root).
	CheckTree func(dirs ...string) error
	// Trace, when set, is called at the end of each step of the build with
	// the step's name (squashfs, verity, initramfs, hash, boot, root, sync,
	// bundle, rename), for a per-step timeline (ovroot build --trace).
	Trace func(step string)
}

// BootInfo is layout.BootInfoFile in the boot partition: what `ovroot run`
// needs to boot the image.
type BootInfo struct {
	Arch          layout.Arch `json:"arch"`
	Cmdline       string      `json:"cmdline"`
	Kernel        string      `json:"kernel"`
	Initrd        string      `json:"initrd"`
	KernelRelease string      `json:"kernel_release,omitempty"`
	// Loader is what boots the image from its disk (uefi, uboot, none);
	// absent in images built before loaders, which boot as none.
	Loader layout.Loader `json:"loader,omitempty"`
	// Two-slot images: the slot count, the board, the build id of the
	// factory root (slot a) and the trial boots an upgrade gets. Absent
	// in one-slot images.
	Slots   int    `json:"slots,omitempty"`
	Board   string `json:"board,omitempty"`
	BuildID string `json:"build_id,omitempty"`
	Tries   int    `json:"tries,omitempty"`
}

// Partition is one partition of an image.
type Partition struct {
	Index    int
	Label    string
	TypeGUID string
	Start    int64 // bytes
	Size     int64 // bytes
}

// Result describes a built image.
type Result struct {
	Partitions    []Partition
	BuildID       string // two-slot images: slot.BuildID of the squashfs
	BundleBytes   int64  // the update bundle's size, when one was written
	SquashfsBytes int64
	Entries       int // rootfs entries, the root directory included
	// Rootfs says what the rootfs was ("tarball X", "OCI image layout X,
	// linux/arm64, 3 layers, sha256:...").
	Rootfs string
	// Verity is the root's hash tree (verity = true): VerityBytes more
	// after the squashfs, padding and superblock included.
	Verity      *verity.Info
	VerityBytes int64
}

const (
	mib        = 1 << 20
	sectorSize = 512
	// gptReserve is left free at both ends for the primary and backup GPT.
	gptReserve = mib
)

// fatEpoch is the time of every file in the boot partition (FAT's own epoch).
var fatEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

const bootVolumeLabel = "OVROOTBOOT"

// diskRW is what fixFATTimes reads and writes through.
type diskRW interface {
	io.ReaderAt
	io.WriterAt
}

// fixFATTimes gives the volume label entry and the "." and ".." entries of
// every directory of the FAT32 filesystem at start the FAT epoch as their
// times, and ".." in the root's subdirectories cluster 0 as the spec
// wants: go-diskfs v1.9.4 stamps them with the clock even when asked for
// a reproducible filesystem (Chtimes reaches only a directory's entry in
// its parent, and nothing reaches the label), so two builds of the same
// inputs a few seconds apart differed there. It reads the boot sector
// (Microsoft's FAT32 layout: bytes per sector at 11, sectors per cluster
// 13, reserved sectors 14, FAT count 16, sectors per FAT 36, root cluster
// 44) and walks the tree, following each directory's cluster chain in the
// first FAT; the label is the root directory's entry of attribute 0x08.
func fixFATTimes(f diskRW, start int64) error {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, start); err != nil {
		return fmt.Errorf("FAT boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	spc := int64(bs[13])
	reserved := int64(binary.LittleEndian.Uint16(bs[14:]))
	fats := int64(bs[16])
	fatSectors := int64(binary.LittleEndian.Uint32(bs[36:]))
	root := binary.LittleEndian.Uint32(bs[44:])
	if bps == 0 || spc == 0 || fats == 0 || fatSectors == 0 || root < 2 {
		return errors.New("FAT boot sector: not a FAT32 filesystem")
	}
	fatStart := start + reserved*bps
	dataStart := fatStart + fats*fatSectors*bps
	clusterSize := bps * spc
	maxCluster := uint32(fatSectors * bps / 4)
	next := func(c uint32) (uint32, error) {
		b := make([]byte, 4)
		if _, err := f.ReadAt(b, fatStart+int64(c)*4); err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint32(b) & 0x0FFFFFFF, nil
	}
	// Creation time (13-17), access date (18-19), write time and date
	// (22-25): 00:00:00 on 1980-01-01 (date 0x0021).
	fixed := []byte{0, 0, 0, 0x21, 0, 0x21, 0}
	label := []byte(fmt.Sprintf("%-11s", bootVolumeLabel))
	labelFound := false
	seen := map[uint32]bool{}
	var walk func(dir uint32, depth int) error
	walk = func(dir uint32, depth int) error {
		if depth > 16 || seen[dir] {
			return fmt.Errorf("FAT directory tree: cluster %d seen twice or too deep", dir)
		}
		seen[dir] = true
		for c, i := dir, 0; c >= 2 && c < 0x0FFFFFF8; i++ {
			if c >= maxCluster || i > 1<<16 {
				return fmt.Errorf("FAT directory at cluster %d: bad chain", dir)
			}
			off := dataStart + int64(c-2)*clusterSize
			buf := make([]byte, clusterSize)
			if _, err := f.ReadAt(buf, off); err != nil {
				return err
			}
			dirty := false
			for e := int64(0); e+32 <= clusterSize; e += 32 {
				ent := buf[e : e+32]
				if ent[0] == 0 {
					break
				}
				if depth == 0 && ent[11] == 0x08 && bytes.Equal(ent[:11], label) {
					copy(ent[13:20], fixed)
					copy(ent[22:26], []byte{0, 0, 0x21, 0})
					dirty, labelFound = true, true
					continue
				}
				if ent[0] == 0xE5 || ent[11]&0x0F == 0x0F || ent[11]&0x10 == 0 {
					continue // deleted, a long-name part, or not a directory
				}
				if ent[0] == '.' {
					copy(ent[13:20], fixed)
					copy(ent[22:26], []byte{0, 0, 0x21, 0})
					// ".." of a directory in the root names cluster 0,
					// not the root's cluster (FAT spec; go-diskfs v1.9.4
					// writes the root's, which fsck.fat flags in every
					// top-level directory).
					if ent[1] == '.' && uint32(binary.LittleEndian.Uint16(ent[20:]))<<16|uint32(binary.LittleEndian.Uint16(ent[26:])) == root {
						clear(ent[20:22])
						clear(ent[26:28])
					}
					dirty = true
					continue
				}
				sub := uint32(binary.LittleEndian.Uint16(ent[20:]))<<16 | uint32(binary.LittleEndian.Uint16(ent[26:]))
				if err := walk(sub, depth+1); err != nil {
					return err
				}
			}
			if dirty {
				if _, err := f.WriteAt(buf, off); err != nil {
					return err
				}
			}
			n, err := next(c)
			if err != nil {
				return err
			}
			c = n
		}
		return nil
	}
	if err := walk(root, 0); err != nil {
		return err
	}
	if !labelFound {
		return fmt.Errorf("no volume label entry %q in the FAT root directory", bootVolumeLabel)
	}
	return nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// Build writes the image to out. The image is written to a temporary file
// beside out and renamed over it only when complete: a failed or cancelled
// build leaves out as it was. out must not be an input, a directory or
// anything but a regular file (see CheckOutput).
func Build(ctx context.Context, s Spec, out string) (*Result, error) {
	logf := s.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if !s.Arch.Valid() {
		return nil, fmt.Errorf("unknown arch %q", s.Arch)
	}
	checkFile := func(what, p string) error {
		if fi, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		} else if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s %s is not a regular file", what, p)
		}
		return nil
	}
	if err := checkFile("kernel", s.Kernel); err != nil {
		return nil, err
	}
	if s.Pending == nil {
		if err := checkFile("initramfs", s.Initramfs); err != nil {
			return nil, err
		}
	}
	if s.Loader == "" {
		s.Loader = layout.LoaderNone
	}
	switch s.Slots {
	case 0, 1:
		s.Slots = 1
		if s.Bundle != "" {
			return nil, errors.New("an update bundle is for two-slot images (slots = 2): a one-slot image has no slot to write it to")
		}
	case 2:
		if s.Loader != layout.LoaderUEFI && s.Loader != layout.LoaderUBoot {
			return nil, fmt.Errorf("slots = 2 needs loader uefi or uboot (something must count trial boots); loader %s has none", s.Loader)
		}
		if s.Tries == 0 {
			s.Tries = layout.DefaultTries
		}
		if s.Board == "" {
			s.Board = DefaultBoard
		}
	default:
		return nil, fmt.Errorf("slots = %d: want 1 or 2", s.Slots)
	}
	if err := s.Arch.Supports(s.Loader); err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	if s.Loader == layout.LoaderUEFI {
		if s.LoaderFile == "" {
			return nil, errors.New("loader uefi: no loader binary given")
		}
		if err := CheckEFI("loader file", s.LoaderFile, s.Arch); err != nil {
			return nil, err
		}
	}
	inputs := append([]Input{{"kernel", s.Kernel}, {"initramfs", s.Initramfs}, {"rootfs", s.Rootfs}, {"loader file", s.LoaderFile}}, append(layerInputs(s.Layers), stackInputs(s.Stack)...)...)
	out, err := CheckOutput(out, inputs)
	if err != nil {
		return nil, err
	}
	if s.Bundle != "" {
		b, err := CheckOutput(s.Bundle, append(inputs, Input{"image", out}))
		if err != nil {
			return nil, fmt.Errorf("update bundle: %w", err)
		}
		if b == out {
			return nil, fmt.Errorf("update bundle %s is the image's output too", s.Bundle)
		}
		s.Bundle = b
	}
	mark := s.Trace
	if mark == nil {
		mark = func(string) {}
	}
	tmp, done, err := tmpdir.Make("image")
	if err != nil {
		return nil, err
	}
	defer done()
	if s.Kernel, err = kernelForLoader(s.Kernel, tmp); err != nil {
		return nil, err
	}
	sqfs := filepath.Join(tmp, "root.squashfs")
	if len(s.Stack) > 0 {
		logf("squashfs: making %d stacked layers", len(s.Stack))
	} else {
		logf("squashfs: making it of %s", s.Rootfs)
	}
	stop := showProgress(s.Progress, "squashfs", sqfs)
	var entries int
	var rootfsDesc string
	if len(s.Stack) > 0 {
		entries, rootfsDesc, err = makeStack(ctx, s, sqfs, s.CheckTree)
	} else {
		var check func(string) error
		if s.CheckTree != nil {
			check = func(dir string) error { return s.CheckTree(dir) }
		}
		entries, rootfsDesc, err = makeSquashfs(ctx, s.Rootfs, s.Arch, sqfs, s.Compression, sqOptions{layers: s.Layers, check: check}, s.Add...)
	}
	stop()
	if err != nil {
		return nil, err
	}
	mark("squashfs")
	logf("squashfs: rootfs %s", rootfsDesc)
	for _, a := range s.Add {
		logf("squashfs: %s", a.Note)
	}
	var vinfo *verity.Info
	var plainSize int64
	if s.Verity {
		// The tree goes after the squashfs in the same file, so the root
		// partition, the slot and the bundle's root member all carry it.
		t := time.Now()
		if fi, err := os.Stat(sqfs); err == nil {
			plainSize = fi.Size()
		}
		info, err := tree.Format(sqfs)
		if err != nil {
			return nil, err
		}
		vinfo = &info
		s.Cmdline = strings.TrimSpace(s.Cmdline + " " + verity.CmdlineParam + "=" + info.Param())
		logf("verity: root hash %x, %d data blocks, tree after them, in %s", info.RootHash, info.DataBlocks, time.Since(t).Round(time.Millisecond))
		mark("verity")
	}
	if s.Pending != nil {
		rel, err := s.Pending()
		if err != nil {
			return nil, err
		}
		if s.KernelRelease == "" {
			s.KernelRelease = rel
		}
		if err := checkFile("initramfs", s.Initramfs); err != nil {
			return nil, err
		}
		mark("initramfs")
	}
	fi, err := os.Stat(sqfs)
	if err != nil {
		return nil, err
	}
	sqSize := fi.Size()
	logf("squashfs: %d entries, %d bytes", entries, sqSize)
	rootSize := s.RootSize
	if rootSize == 0 {
		rootSize = roundUp(sqSize, mib)
		if s.Slots == 2 {
			// Room for the roots of later upgrades: half as much again.
			rootSize = roundUp(sqSize+sqSize/2, mib)
		}
	} else if rootSize < sqSize {
		return nil, fmt.Errorf("root_size %d bytes is smaller than the squashfs (%d bytes)", rootSize, sqSize)
	}
	parts := []Partition{
		{Index: 1, Label: layout.BootLabel, TypeGUID: layout.ESPTypeGUID, Size: roundUp(s.BootSize, mib)},
		{Index: 2, Label: layout.RootLabel, TypeGUID: s.Arch.RootTypeGUID(), Size: roundUp(rootSize, mib)},
		{Index: 3, Label: layout.DataLabel, TypeGUID: layout.LinuxDataTypeGUID, Size: roundUp(s.DataSize, mib)},
	}
	var buildID string
	if s.Slots == 2 {
		sum := sha256.New()
		if err := hashFile(ctx, sum, sqfs); err != nil {
			return nil, err
		}
		buildID = slot.BuildID(sum.Sum(nil))
		s.buildID = buildID
		parts = []Partition{
			parts[0],
			{Index: 2, Label: layout.SlotA.Label(layout.RootLabel), TypeGUID: s.Arch.RootTypeGUID(), Size: roundUp(rootSize, mib)},
			{Index: 3, Label: layout.SlotB.Label(layout.RootLabel), TypeGUID: s.Arch.RootTypeGUID(), Size: roundUp(rootSize, mib)},
			{Index: 4, Label: layout.DataLabel, TypeGUID: layout.LinuxDataTypeGUID, Size: roundUp(s.DataSize, mib)},
		}
		logf("slots: 2 (a holds build %s; each slot %d MiB)", buildID, roundUp(rootSize, mib)/mib)
	}
	off := int64(gptReserve)
	for i := range parts {
		parts[i].Start = off
		off += parts[i].Size
	}
	total := off + gptReserve

	// GUIDs derived from the inputs, so the same inputs give the same bytes.
	seed := sha256.New()
	fmt.Fprintf(seed, "%s\x00%s\x00%d\x00%d\x00%d\x00%s\x00", s.Arch, s.Cmdline, s.BootSize, rootSize, s.DataSize, s.Loader)
	if s.Slots == 2 {
		fmt.Fprintf(seed, "slots=2\x00%s\x00%d\x00", s.Board, s.Tries)
	}
	for _, p := range []string{s.Kernel, s.Initramfs, sqfs, s.LoaderFile} {
		if p == "" {
			continue
		}
		if err := hashFile(ctx, seed, p); err != nil {
			return nil, err
		}
	}
	sum := seed.Sum(nil)
	mark("hash")
	guid := func(n byte) string {
		return uuid.NewSHA1(uuid.UUID(sum[:16]), []byte{n}).String()
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The partial image: a hidden name beside out (so the rename stays on
	// one filesystem), removed on every error.
	pf, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", out, err)
	}
	partial := pf.Name()
	pf.Close()
	os.Remove(partial) // go-diskfs creates it itself (O_EXCL)
	complete := false
	defer func() {
		if !complete {
			os.Remove(partial)
		}
	}()
	if err := writeImage(ctx, s, partial, total, parts, guid, sqfs, mark); err != nil {
		return nil, err
	}
	res := &Result{Partitions: parts, SquashfsBytes: sqSize, Entries: entries, Rootfs: rootfsDesc, BuildID: buildID}
	if vinfo != nil {
		res.Verity, res.SquashfsBytes, res.VerityBytes = vinfo, plainSize, sqSize-plainSize
	}
	// The bundle before the image is renamed into place: a bundle that
	// cannot be written (a full disk) fails the build with out as it was.
	if s.Bundle != "" {
		n, err := writeBundle(ctx, s, sqfs)
		if err != nil {
			return nil, fmt.Errorf("update bundle %s: %w", s.Bundle, err)
		}
		res.BundleBytes = n
		logf("bundle: %s, %d bytes, build %s", s.Bundle, n, buildID)
		mark("bundle")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.Rename(partial, out); err != nil {
		return nil, fmt.Errorf("rename %s to %s: %w", partial, out, err)
	}
	complete = true
	mark("rename")
	return res, nil
}

// writeImage writes the GPT, the boot partition and the squashfs into a new
// file at image, and syncs it; mark ends the steps boot, root and sync.
func writeImage(ctx context.Context, s Spec, image string, total int64, parts []Partition, guid func(byte) string, sqfs string, mark func(string)) error {
	// Through a write-back buffer: go-diskfs writes in 512-byte pieces.
	raw, err := file.CreateFromPath(image, total)
	if err != nil {
		return fmt.Errorf("create %s: %w", image, err)
	}
	wb, err := newWriteBack(raw)
	if err != nil {
		raw.Close()
		return fmt.Errorf("create %s: %w", image, err)
	}
	d, err := diskfs.OpenBackend(wb, diskfs.WithOpenMode(diskfs.ReadWrite), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		wb.Close()
		return fmt.Errorf("create %s: %w", image, err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	table := &gpt.Table{LogicalSectorSize: sectorSize, PhysicalSectorSize: sectorSize, ProtectiveMBR: true, GUID: guid(0)}
	for _, p := range parts {
		var attrs uint64
		if p.Index == 1 && s.Loader == layout.LoaderUBoot {
			// "Legacy BIOS bootable" (UEFI spec 2.10 table 5.6, bit 2):
			// the flag U-Boot's distro boot scans for (part list
			// -bootable); without any it tries partition 1 anyway.
			attrs = 1 << 2
		}
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Attributes: attrs,
			Index:      p.Index,
			Start:      uint64(p.Start / sectorSize),
			End:        uint64((p.Start+p.Size)/sectorSize - 1),
			Type:       gpt.Type(p.TypeGUID),
			Name:       p.Label,
			GUID:       guid(byte(p.Index)),
		})
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("write GPT: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := writeBoot(d, s); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	// In the buffer, before it is written out.
	if err := fixFATTimes(wb, parts[0].Start); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	closed = true
	if err := d.Close(); err != nil {
		return err
	}
	mark("boot")
	// Written directly: go-diskfs insists on filling the whole partition.
	if err := copyAt(ctx, image, sqfs, parts[1].Start); err != nil {
		return fmt.Errorf("write squashfs into partition %d (%s): %w", parts[1].Index, layout.RootLabel, err)
	}
	mark("root")
	if err := syncFile(image); err != nil {
		return fmt.Errorf("sync %s: %w", image, err)
	}
	mark("sync")
	return nil
}

// Input is one file or directory a build reads, for CheckOutput.
type Input struct{ What, Path string }

// layerInputs names each layer tarball as an input ("layer 2").
func layerInputs(layers []string) []Input {
	var in []Input
	for i, l := range layers {
		in = append(in, Input{fmt.Sprintf("layer %d", i+1), l})
	}
	return in
}

// CheckOutput refuses an image path that would destroy something: one of
// the inputs, a path inside an input directory (the rootfs), a directory,
// or anything but a regular file (a block device, a fifo, /dev/null). A
// symlink is followed: the image replaces what it points at. It returns
// the path to write.
func CheckOutput(out string, inputs []Input) (string, error) {
	if out == "" {
		return "", errors.New("no output file given")
	}
	fi, err := os.Lstat(out)
	if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(out)
		if err != nil {
			return "", fmt.Errorf("output %s is a symlink that cannot be followed: %w", out, err)
		}
		out = target
		fi, err = os.Lstat(out)
	}
	switch {
	case err == nil && fi.IsDir():
		return "", fmt.Errorf("output %s is a directory; give a file name, e.g. %s", out, filepath.Join(out, "disk.img"))
	case err == nil && !fi.Mode().IsRegular():
		return "", fmt.Errorf("output %s is a %s, not a regular file: ovroot writes image files only (write the image, then copy it to a device with dd)", out, describeMode(fi.Mode()))
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("output %s: %w", out, err)
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(out))
	if err != nil {
		return "", fmt.Errorf("output %s: directory: %w", out, err)
	}
	full := filepath.Join(dir, filepath.Base(out))
	// Both sides resolved and absolute: "rootfs/x.img" is inside
	// /abs/rootfs, and so is anything reached through a symlink to it.
	absFull, err := filepath.Abs(full)
	if err != nil {
		return "", fmt.Errorf("output %s: %w", out, err)
	}
	for _, in := range inputs {
		if in.Path == "" {
			continue
		}
		ifi, err := os.Stat(in.Path)
		if err != nil {
			continue // the step that reads it says what is wrong
		}
		if fi != nil && os.SameFile(fi, ifi) {
			return "", fmt.Errorf("output %s is the %s given as input (%s); the build would overwrite it", out, in.What, in.Path)
		}
		if ifi.IsDir() {
			if d, err := filepath.EvalSymlinks(in.Path); err == nil {
				if d, err = filepath.Abs(d); err != nil {
					continue
				}
				if rel, err := filepath.Rel(d, absFull); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
					return "", fmt.Errorf("output %s is inside the %s directory %s; the image would end up in the next build", out, in.What, in.Path)
				}
			}
		}
	}
	return full, nil
}

func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0:
		return "block device"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return m.Type().String()
}

func copyAt(ctx context.Context, dst, src string, off int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	// In pieces from the file to the file, so the kernel copies
	// (copy_file_range: no trip through user space for hundreds of MiB)
	// and a cancel is heard between pieces.
	if _, err := out.Seek(off, io.SeekStart); err != nil {
		out.Close()
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			out.Close()
			return err
		}
		n, err := out.ReadFrom(io.LimitReader(in, 32<<20))
		if err != nil {
			out.Close()
			return err
		}
		if n == 0 {
			break
		}
	}
	return out.Close()
}

// syncFile writes a file's data to its disk: the image is complete on disk
// before it is renamed into place.
func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ctxReader stops a copy when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func hashFile(ctx context.Context, w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, ctxReader{ctx, f})
	return err
}

func writeBoot(d *disk.Disk, s Spec) error {
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: bootVolumeLabel, Reproducible: true})
	if err != nil {
		return err
	}
	bi := BootInfo{Arch: s.Arch, Cmdline: s.Cmdline, Kernel: layout.KernelFile, Initrd: layout.InitrdFile, KernelRelease: s.KernelRelease, Loader: s.Loader}
	loaderFiles := LoaderFiles(s.Arch, s.Loader, s.Cmdline, s.KernelRelease, s.LoaderFile)
	if s.Slots == 2 {
		var direct slot.Entry
		loaderFiles, direct = slotLoaderFiles(s)
		bi.Kernel = layout.SlotA.Dir() + "/" + layout.KernelFile
		bi.Initrd = layout.SlotA.Dir() + "/" + layout.InitrdFile
		// What `ovroot run --direct` hands the kernel: slot a, as the
		// loader would, without ovroot.loader= (no loader started it).
		direct.Loader = ""
		bi.Cmdline = direct.KernelCmdline()
		bi.Slots, bi.Board, bi.BuildID, bi.Tries = 2, s.Board, s.buildID, s.Tries
	}
	info, err := json.MarshalIndent(bi, "", "  ")
	if err != nil {
		return err
	}
	dirs := map[string]bool{}
	copyIn := func(name string, data []byte) error {
		// Parent directories first (EFI, EFI/BOOT, loader, ...).
		for i := range name {
			if name[i] != '/' || dirs[name[:i]] {
				continue
			}
			if err := fs.Mkdir("/" + name[:i]); err != nil {
				return fmt.Errorf("create %s: %w", name[:i], err)
			}
			// Directories too get the clock from go-diskfs: two builds
			// a few seconds apart differed in EFI/ and loader/.
			if err := fs.Chtimes("/"+name[:i], fatEpoch, fatEpoch, fatEpoch); err != nil {
				return fmt.Errorf("set the time of %s: %w", name[:i], err)
			}
			dirs[name[:i]] = true
		}
		f, err := fs.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		// One Write of the whole file: go-diskfs allocates clusters and
		// rewrites the whole FAT on every Write, so io.Copy's 32 KiB
		// chunks cost a FAT write each (a third of a second for a kernel
		// and an initramfs). Boot files are a few MiB, read whole with
		// os.ReadFile, which sizes its buffer once (io.ReadAll's growing
		// one cost 80 ms of clearing memory per build).
		if _, err := f.Write(data); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
		// go-diskfs stamps new FAT entries with the clock even when
		// Reproducible: fixed times keep the same inputs the same bytes.
		return fs.Chtimes("/"+name, fatEpoch, fatEpoch, fatEpoch)
	}
	for _, c := range []struct{ name, src string }{{bi.Kernel, s.Kernel}, {bi.Initrd, s.Initramfs}} {
		data, err := os.ReadFile(c.src)
		if err != nil {
			return err
		}
		if err := copyIn(c.name, data); err != nil {
			return err
		}
	}
	for _, b := range loaderFiles {
		data := b.Data
		if b.Source != "" {
			var err error
			if data, err = os.ReadFile(b.Source); err != nil {
				return err
			}
		}
		if err := copyIn(b.Name, data); err != nil {
			return err
		}
	}
	return copyIn(layout.BootInfoFile, append(info, '\n'))
}

// ListPartitions reads an image's GPT.
func ListPartitions(image string) ([]Partition, error) {
	// Said in our words before go-diskfs says it in its own ("could not
	// get file size for device zero.img").
	fi, err := os.Stat(image)
	switch {
	case err != nil:
		return nil, fmt.Errorf("disk image: %w", err)
	case fi.IsDir():
		return nil, fmt.Errorf("%s is a directory, not a disk image", image)
	case fi.Mode().IsRegular() && fi.Size() == 0:
		return nil, fmt.Errorf("%s is empty, not a disk image (ovroot build writes one)", image)
	case fi.Mode().IsRegular() && fi.Size() < 34*sectorSize:
		return nil, fmt.Errorf("%s is %d bytes: too small to hold a GPT, not an ovroot disk image", image, fi.Size())
	}
	d, err := diskfs.Open(image, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("open disk image %s: %w", image, err)
	}
	defer d.Close()
	t, err := d.GetPartitionTable()
	if err != nil {
		return nil, fmt.Errorf("%s is not an ovroot disk image: no GPT partition table (%v)", image, err)
	}
	gt, ok := t.(*gpt.Table)
	if !ok {
		return nil, fmt.Errorf("%s: not a GPT disk", image)
	}
	var out []Partition
	for i, p := range gt.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		out = append(out, Partition{Index: i + 1, Label: p.Name, TypeGUID: strings.ToUpper(string(p.Type)),
			Start: int64(p.Start) * sectorSize, Size: int64(p.End-p.Start+1) * sectorSize})
	}
	return out, nil
}

// ReadBootInfo reads an image's ovroot.json.
func ReadBootInfo(image string) (*BootInfo, error) {
	info, _, _, err := readBoot(image, "")
	return info, err
}

// ReadBoot reads the boot info of an image and extracts its kernel and
// initramfs into dir.
func ReadBoot(image, dir string) (*BootInfo, string, string, error) {
	return readBoot(image, dir)
}

// readBoot reads ovroot.json, and extracts the kernel and initramfs into
// dir unless dir is "".
func readBoot(image, dir string) (*BootInfo, string, string, error) {
	parts, err := ListPartitions(image)
	if err != nil {
		return nil, "", "", err
	}
	idx := 0
	for _, p := range parts {
		if p.Label == layout.BootLabel {
			idx = p.Index
		}
	}
	if idx == 0 {
		return nil, "", "", fmt.Errorf("%s has no partition labelled %s", image, layout.BootLabel)
	}
	d, err := diskfs.Open(image, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, "", "", err
	}
	defer d.Close()
	fs, err := d.GetFilesystem(idx)
	if err != nil {
		return nil, "", "", fmt.Errorf("boot partition %d of %s: %w", idx, image, err)
	}
	read := func(name string) ([]byte, error) {
		f, err := fs.OpenFile("/"+name, os.O_RDONLY)
		if err != nil {
			return nil, fmt.Errorf("%s in the boot partition of %s: %w", name, image, err)
		}
		defer f.Close()
		return io.ReadAll(f)
	}
	data, err := read(layout.BootInfoFile)
	if err != nil {
		return nil, "", "", err
	}
	var info BootInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, "", "", fmt.Errorf("%s in the boot partition of %s: %w", layout.BootInfoFile, image, err)
	}
	if !info.Arch.Valid() {
		return nil, "", "", fmt.Errorf("%s in %s names unknown arch %q", layout.BootInfoFile, image, info.Arch)
	}
	if info.Loader != "" {
		if _, err := layout.ParseLoader(string(info.Loader)); err != nil {
			return nil, "", "", fmt.Errorf("%s in %s: %w", layout.BootInfoFile, image, err)
		}
	}
	if dir == "" {
		return &info, "", "", nil
	}
	var paths [2]string
	for i, name := range []string{info.Kernel, info.Initrd} {
		data, err := read(name)
		if err != nil {
			return nil, "", "", err
		}
		paths[i] = filepath.Join(dir, filepath.Base(name))
		if err := os.WriteFile(paths[i], data, 0o644); err != nil {
			return nil, "", "", err
		}
	}
	return &info, paths[0], paths[1], nil
}
