package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// DefaultBoard is the board of an image that names none.
const DefaultBoard = slot.DefaultBoard

// SlotModules are the modules a two-slot image loads at boot besides its
// own: vfat with the character sets ovrootctl mounts the boot partition
// with (codepage 437, iocharset ascii), so mark-good and upgrade can change
// the boot entries after switch_root, when the initramfs and its modules
// are gone; and for UEFI efivarfs, for the init to read which entry
// systemd-boot counted (LoaderBootCountPath). U-Boot says that on the
// command line (ovroot.try=), and efivarfs refuses to load without EFI.
func SlotModules(loader layout.Loader) []string {
	mods := []string{"vfat", "nls_cp437", "nls_ascii"}
	if loader == layout.LoaderUEFI {
		mods = append([]string{"efivarfs"}, mods...)
	}
	return mods
}

// VerityModules are the modules an image with verity = true loads at boot
// (their dependencies, dm-bufio and the like, come with them).
var VerityModules = []string{"dm_mod", "dm_verity"}

// extraModules are the modules the image's features need besides those
// it names.
func extraModules(im *config.Image) []string {
	var mods []string
	if im.Slots == 2 {
		mods = append(mods, SlotModules(im.Loader())...)
	}
	if im.Verity {
		mods = append(mods, VerityModules...)
	}
	if len(im.Layer) > 0 {
		// The layers above the bottom one are device-mapper linear
		// mappings of the root (boot.MapLayer).
		mods = append(mods, "dm_mod")
	}
	return mods
}

// SlotsLoaderConf is loader.conf of a two-slot image: systemd-boot boots
// the first entry matching slot.DefaultPattern in its order, which puts
// entries with no tries left last and the highest version first.
func SlotsLoaderConf() string {
	return "timeout 0\neditor no\ndefault " + slot.DefaultPattern + "\n"
}

// slotLoaderFiles is the boot partition of a two-slot image besides the
// kernel and initramfs (in slot-a/): for UEFI systemd-boot, loader.conf,
// and the confirmed entry of slot a, generation 1; for U-Boot boot.scr
// and slot a's entry file, confirmed (tries 0), generation 1. It returns
// slot a's entry too.
func slotLoaderFiles(s Spec) ([]BootFile, slot.Entry) {
	e := slot.Entry{Slot: layout.SlotA, Generation: 1, BuildID: s.buildID, Options: s.Cmdline, Loader: s.Loader, Release: s.KernelRelease}
	if s.Loader == layout.LoaderUBoot {
		return []BootFile{
			{Name: layout.BootScriptFile, Data: slot.UImageScript(s.Arch, "ovroot A/B boot", slot.BootScript(s.Arch))},
			{Name: layout.EntriesDir + "/" + slot.EnvFileName(layout.SlotA), Data: []byte(e.Env(0))},
		}, e
	}
	name := slot.Name{Slot: layout.SlotA}.FileName()
	return []BootFile{
		{Name: s.Arch.EFIBootFile(), Source: s.LoaderFile},
		{Name: layout.LoaderConfFile, Data: []byte(SlotsLoaderConf())},
		{Name: layout.EntriesDir + "/" + name, Data: []byte(e.Text())},
	}, e
}

// bundleTime is every bundle's creation time and tar member time, so the
// same inputs give the same bundle bytes.
var bundleTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// writeBundle writes the update bundle of a two-slot build to s.Bundle:
// written beside it and renamed when complete, so a failed build leaves
// what was there. It returns the bundle's size.
func writeBundle(ctx context.Context, s Spec, sqfs string) (int64, error) {
	if s.buildID == "" {
		return 0, errors.New("no build id: not a two-slot build")
	}
	f, err := os.CreateTemp(filepath.Dir(s.Bundle), "."+filepath.Base(s.Bundle)+".partial-")
	if err != nil {
		return 0, err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	open := func(p string) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			return readCloser{ctxReader{ctx, f}, f}, nil
		}
	}
	m := slot.Manifest{Arch: s.Arch, Board: s.Board, Loader: s.Loader, Cmdline: s.Cmdline,
		KernelRelease: s.KernelRelease, Tries: s.Tries, Created: bundleTime, Version: s.Version}
	if m.Version == "" {
		m.Version = "0"
	}
	err = slot.WriteBundle(f, m, []slot.Source{
		{Name: slot.RootName, Open: open(sqfs)},
		{Name: layout.KernelFile, Open: open(s.Kernel)},
		{Name: layout.InitrdFile, Open: open(s.Initramfs)},
	}, s.SignKey)
	if err != nil {
		return 0, err
	}
	if err := f.Chmod(0o644); err != nil { // CreateTemp made it 0600
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), s.Bundle); err != nil {
		return 0, fmt.Errorf("rename to %s: %w", s.Bundle, err)
	}
	done = true
	return fi.Size(), nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
