// Package layout holds the facts that the host tools, the device's init and
// ovrootctl must agree on: partition labels, mount points, file names inside
// the initramfs and the boot partition, every name on the data filesystem
// (data.go), the boot's state record (state.go), and per-architecture
// constants.
//
// It is imported by every side (boot/ and reset/ on the device, ovrootctl,
// imagebuild/, initramfs/ and qemu/ on the host) so each fact is defined
// exactly once. It imports only the standard library, so importing it links
// nothing of the init into ovrootctl or the host tool, and it holds no logic
// beyond lookups.
package layout

import "fmt"

// Partition labels (GPT PARTLABEL). The data label is OpenWRT's.
const (
	BootLabel = "boot"
	RootLabel = "rootfs"
	DataLabel = "rootfs_data"
)

// Mount points on the device, as on OpenWRT: the squashfs at /rom, the data
// filesystem at /overlay holding upper/ and work/.
const (
	RomDir     = "/rom"
	OverlayDir = "/overlay"
	UpperName  = "upper"
	WorkName   = "work"
	// NewRootDir is where the init assembles the overlay root before switch_root.
	NewRootDir = "/newroot"
	// RunDir holds the init's runtime state (tmpfs /run, carried into the real root).
	RunDir = "/run/ovroot"
)

// Files inside the initramfs.
const (
	// InitConfigPath is the init's TOML config.
	InitConfigPath = "/etc/ovroot/init.toml"
	// ModuleLoadList lists module files (paths inside the initramfs), one per
	// line, in an order the init may load them in (dependencies first). After
	// the path, space-separated: deps=a,b (modules it needs), after=c
	// (softdep pre:, loaded first if they load), needs=cpu:... (one per cpu:
	// alias; the module is for a CPU feature).
	ModuleLoadList = "/lib/modules/ovroot.load"
	// E2fsckPath is where the initramfs carries a static e2fsck (Debian's
	// e2fsck-static) to repair the data partition, when the image has one.
	E2fsckPath = "/sbin/e2fsck"
)

// Files inside the boot partition (FAT).
const (
	KernelFile   = "vmlinuz"
	InitrdFile   = "initrd.img"
	BootInfoFile = "ovroot.json"
)

// Well-known GPT partition type GUIDs (Discoverable Partitions Specification).
const (
	ESPTypeGUID       = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	LinuxDataTypeGUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
)

// Arch is a target architecture as users spell it in image.toml.
type Arch string

const (
	X86_64 Arch = "x86_64"
	ARM64  Arch = "arm64"
	// ARM is 32-bit ARM: ARMv7-A with hardware floating point (Debian's
	// armhf, its armmp kernel).
	ARM Arch = "arm"
)

// Arches lists the supported architectures in a stable order.
var Arches = []Arch{X86_64, ARM64, ARM}

// ArchNames is how messages list the architectures users may give.
const ArchNames = "x86_64, arm64 or arm"

type archInfo struct {
	goarch string
	// goVariant pins the Go toolchain's instruction-set level for the
	// arch (GOAMD64, GOARM64, GOARM), so a user's environment never
	// builds device programs for a newer CPU than the arch's baseline.
	goVariant  string
	debianArch string
	rootType   string // DPS root partition type GUID
	console    string // serial console device for the kernel cmdline
}

var archTable = map[Arch]archInfo{
	X86_64: {goarch: "amd64", goVariant: "GOAMD64=v1", debianArch: "amd64", rootType: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", console: "ttyS0"},
	ARM64:  {goarch: "arm64", goVariant: "GOARM64=v8.0", debianArch: "arm64", rootType: "B921B045-1DF0-41C3-AF44-4C6F280D3FAE", console: "ttyAMA0"},
	// GOARM=7 is ARMv7 with VFPv3 hardware floating point: Debian armhf's ABI.
	ARM: {goarch: "arm", goVariant: "GOARM=7", debianArch: "armhf", rootType: "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", console: "ttyAMA0"},
}

// ParseArch accepts the names users type (x86_64, amd64, arm64, aarch64,
// arm, armhf, armv7).
func ParseArch(s string) (Arch, error) {
	switch s {
	case "x86_64", "amd64":
		return X86_64, nil
	case "arm64", "aarch64":
		return ARM64, nil
	case "arm", "armhf", "armv7":
		return ARM, nil
	}
	return "", fmt.Errorf("unknown arch %q (want %s)", s, ArchNames)
}

func (a Arch) info() archInfo {
	i, ok := archTable[a]
	if !ok {
		panic(fmt.Sprintf("layout: unknown arch %q", string(a)))
	}
	return i
}

// GOARCH is the Go toolchain's name for the arch.
func (a Arch) GOARCH() string { return a.info().goarch }

// GoVariant is the Go toolchain's instruction-set setting for the arch,
// as an environment entry ("GOARM=7").
func (a Arch) GoVariant() string { return a.info().goVariant }

// DebianArch is Debian's name for the arch (package suffix, and the
// directory of the kernel cache: amd64, arm64, armhf).
func (a Arch) DebianArch() string { return a.info().debianArch }

// RootTypeGUID is the DPS root partition type for the arch.
func (a Arch) RootTypeGUID() string { return a.info().rootType }

// Console is the serial console the kernel should use (console=...).
func (a Arch) Console() string { return a.info().console }

// Valid reports whether a is a supported architecture.
func (a Arch) Valid() bool { _, ok := archTable[a]; return ok }
