package layout

// A/B root slots: an image with two root partitions boots one of them (the
// boot entry names it on the kernel command line) and keeps the other for
// the next upgrade. The data partition is shared by both.
//
// The boot partition of a two-slot UEFI image:
//
//	EFI/BOOT/BOOT<ARCH>.EFI               systemd-boot
//	loader/loader.conf                    default ovroot-* (the highest version with tries left)
//	loader/entries/ovroot-a.conf          slot a, confirmed (no counter)
//	loader/entries/ovroot-b+3.conf        slot b on trial: 3 boots left (systemd-boot boot counting)
//	slot-a/vmlinuz, slot-a/initrd.img     the kernel and initramfs of slot a
//	slot-b/vmlinuz, slot-b/initrd.img     those of slot b (written by an upgrade)
//	ovroot.json                           the image as built (factory slot a)
//
// The boot partition of a two-slot U-Boot image (the same scheme, counted
// by a boot script instead of systemd-boot; see slot.BootScript):
//
//	boot.scr                              the script U-Boot's distro boot runs
//	loader/entries/ovroot-a.env           slot a's entry: generation, tries (0 = confirmed), command line
//	loader/entries/ovroot-b.env           slot b's entry, on trial: tries 3
//	loader/entries/ovroot-b.try1          one file per counted boot of slot b, created by boot.scr
//	slot-a/, slot-b/, ovroot.json         as above

// Slot names a root slot: "a" or "b".
type Slot string

const (
	SlotA Slot = "a"
	SlotB Slot = "b"
)

// Slots lists the slots in order.
var Slots = []Slot{SlotA, SlotB}

// Valid reports whether s is a slot name.
func (s Slot) Valid() bool { return s == SlotA || s == SlotB }

// Other is the slot that is not s.
func (s Slot) Other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

// Label is the PARTLABEL of the slot's root partition: base_a, base_b
// (rootfs_a, rootfs_b for the default root label).
func (s Slot) Label(base string) string { return base + "_" + string(s) }

// Dir is the slot's directory in the boot partition (kernel, initramfs).
func (s Slot) Dir() string { return "slot-" + string(s) }

// Kernel command line parameters the boot entries of a two-slot image add.
const (
	// SlotParam names the slot the entry boots (ovroot.slot=b).
	SlotParam = "ovroot.slot"
	// BuildParam is the build id of the slot's root (ovroot.build=<16 hex>).
	BuildParam = "ovroot.build"
	// TryParam is what a U-Boot image's boot script adds to a counted
	// boot: ovroot.try=DONE/TRIES, both hex as U-Boot's setexpr writes
	// them (this is try DONE of TRIES). systemd-boot says the same with the
	// EFI variable LoaderBootCountPath instead.
	TryParam = "ovroot.try"
)

// Files of the slots scheme.
const (
	// EntriesDir holds the Boot Loader Spec entries, one per slot.
	EntriesDir = "loader/entries"
	// BootScriptFile is the boot script of a two-slot U-Boot image, in
	// U-Boot's legacy image format (mkimage -T script).
	BootScriptFile = "boot.scr"
	// UpperBuildFile (in MetaDir on the data filesystem) is the JSON
	// UpperBuild record: the build the upper was made on.
	UpperBuildFile = "upper-build"
	// SlotLogFile (in MetaDir) is JSON lines of SlotEvent: trial boots
	// that failed and why, for ovrootctl status.
	SlotLogFile = "slot-log"
	// ESPMountDir is where ovrootctl and the init's confirmer mount the
	// boot partition while they change entries.
	ESPMountDir = RunDir + "/esp"
	// DefaultTries is how many trial boots a new slot gets.
	DefaultTries = 3

	// TrustedKeysDir (in a root, read from RomDir so that no change in the
	// upper can add a key) holds the minisign public keys, *.pub, whose
	// bundles the root installs: image.toml's [update] trusted_keys. The
	// next release's root carries the next keyring.
	TrustedKeysDir = "etc/ovroot/trusted-keys"
	// HealthDir (in the running root) holds the health checks: every
	// executable there must exit 0 before a trial boot is confirmed.
	HealthDir = "etc/ovroot/health.d"
	// ConfirmedFile (RAM) exists once the running slot is confirmed in
	// this boot: the trial watchdog keeper stops then.
	ConfirmedFile = RunDir + "/confirmed"
	// HealthFile is the JSON result of the last health checks of this
	// boot (RAM: a power cut during them changes nothing on disk).
	HealthFile = RunDir + "/health"
	// UpdatePolicyFile (in a root, read from RomDir) is the JSON
	// UpdatePolicy the root was built with.
	UpdatePolicyFile = "etc/ovroot/update.json"
	// HighestVersionFile (in MetaDir on the data filesystem; a factory
	// reset keeps it) is the highest release version the device ever
	// confirmed, as text: no bundle older than it is installed.
	HighestVersionFile = "highest-version"
)

// UpdatePolicy is a root's UpdatePolicyFile: its own release version and
// what its ovrootctl accepts.
type UpdatePolicy struct {
	Version string `json:"version"`
	// AllowUnsigned installs bundles without a signature (development
	// images only; ovrootctl status says so).
	AllowUnsigned bool `json:"allow_unsigned,omitempty"`
	// AllowDowngrade lets `ovrootctl upgrade --allow-downgrade` install an
	// older version.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// CA is the PEM bundle (a path in the root) that network updates
	// trust instead of the system roots; "" = the system roots.
	CA string `json:"ca,omitempty"`
	// AllowHTTP lets network updates use plain http:// URLs.
	AllowHTTP bool `json:"allow_http,omitempty"`
}
