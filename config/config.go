package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/ovroot/ovroot/layout"
)

// Init is the device init's config: /etc/ovroot/init.toml in the initramfs
// (layout.InitConfigPath), and the [init] table of image.toml.
type Init struct {
	RootLabel     string   `toml:"root_label"`     // PARTLABEL of the squashfs root
	DataLabel     string   `toml:"data_label"`     // PARTLABEL of the data partition
	DeviceTimeout Duration `toml:"device_timeout"` // how long to wait for the partitions
	Init          string   `toml:"init"`           // program to run after switch_root
	DataFSType    string   `toml:"data_fstype"`    // filesystem of the data partition
	OnCorrupt     string   `toml:"on_corrupt"`     // "keep" or "format": a data partition that cannot be mounted or repaired
	// FailsafeWindow is how long the init offers failsafe mode on the
	// console ("press f and Enter"); 0, the default, does not ask.
	FailsafeWindow Duration `toml:"failsafe_window"`
	// Grow moves the backup GPT to the end of a disk larger than the image
	// and grows the data partition and its filesystem to fill it, at boot.
	Grow bool `toml:"grow"`
	// ConfirmAfter confirms a trial boot of a new root slot once the real
	// init has run this long; 0 (written "off", the default) leaves it to
	// an explicit `ovrootctl mark-good`.
	ConfirmAfter OffDuration `toml:"confirm_after"`
	// HealthTimeout is how long each health check (/etc/ovroot/health.d)
	// may run before a trial boot is confirmed.
	HealthTimeout Duration `toml:"health_timeout"`
	// HealthFailure is what confirm_after does when a check fails:
	// "reboot" into the next try at once, or "wait" (the slot stays on
	// trial until something reboots it).
	HealthFailure string `toml:"health_failure"`
	// TrialWatchdog arms the hardware watchdog (/dev/watchdog) on a trial
	// boot: not confirmed within this long, the board resets and the
	// loader counts the try. 0 (written "off", the default) arms none.
	TrialWatchdog OffDuration `toml:"trial_watchdog"`
	Reset         Reset       `toml:"reset"` // factory reset
}

// Reset is the [reset] table of the init config: what a factory reset
// keeps, and the reset button.
type Reset struct {
	// Keep lists paths of the root carried over into the fresh upper.
	Keep []string `toml:"keep"`
	// ButtonKey is the evdev key of the reset button: a name from
	// linux/input-event-codes.h (KEY_RESTART, as OpenWRT's gpio-keys reset
	// button) or a number.
	ButtonKey string `toml:"button_key"`
	// ButtonDevice is the /dev/input/event* device to watch; "" watches all.
	ButtonDevice string `toml:"button_device"`
	// ButtonHold is how long the key must be held.
	ButtonHold Duration `toml:"button_hold"`
	// ButtonWindow is how long the init watches for the key at boot; 0
	// (the default) turns the button off and costs no boot time.
	ButtonWindow Duration `toml:"button_window"`
}

// DefaultInit is the config of an initramfs that carries none.
func DefaultInit() Init {
	return Init{
		RootLabel:     layout.RootLabel,
		DataLabel:     layout.DataLabel,
		DeviceTimeout: Duration(15 * time.Second),
		Init:          "/sbin/init",
		DataFSType:    "ext4",
		OnCorrupt:     "keep",
		Grow:          true,
		HealthTimeout: Duration(60 * time.Second),
		HealthFailure: "reboot",
		Reset: Reset{
			Keep:       []string{},
			ButtonKey:  "KEY_RESTART",
			ButtonHold: Duration(2 * time.Second),
		},
	}
}

var dataFSTypes = []string{"ext4"}

// Validate checks values; the error names the key.
func (c Init) Validate() error { return c.validate("", "") }

func (c Init) validate(file, prefix string) error {
	bad := func(key, format string, args ...any) error {
		return &Error{File: file, Key: prefix + key, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case c.RootLabel == "":
		return bad("root_label", "must not be empty")
	case c.DataLabel == "":
		return bad("data_label", "must not be empty")
	case c.RootLabel == c.DataLabel:
		return bad("data_label", "must differ from root_label (%q)", c.RootLabel)
	case c.DeviceTimeout.D() <= 0 || c.DeviceTimeout.D() > 10*time.Minute:
		return bad("device_timeout", "%s is out of range (want more than 0 and at most 10m)", c.DeviceTimeout)
	case !strings.HasPrefix(c.Init, "/"):
		return bad("init", "%q is not an absolute path", c.Init)
	case !contains(dataFSTypes, c.DataFSType):
		return bad("data_fstype", "%q is not supported (want one of %s)", c.DataFSType, strings.Join(dataFSTypes, ", "))
	}
	if c.FailsafeWindow.D() > time.Minute {
		return bad("failsafe_window", "%s is too long (at most 1m: it delays every boot)", c.FailsafeWindow)
	}
	if c.ConfirmAfter.D() != 0 && (c.ConfirmAfter.D() < time.Second || c.ConfirmAfter.D() > 24*time.Hour) {
		return bad("confirm_after", "%s is out of range (want \"off\", or 1s to 24h)", c.ConfirmAfter)
	}
	if c.TrialWatchdog.D() != 0 && (c.TrialWatchdog.D() < 5*time.Second || c.TrialWatchdog.D() > 24*time.Hour) {
		return bad("trial_watchdog", "%s is out of range (want \"off\", or 5s to 24h)", c.TrialWatchdog)
	}
	if c.HealthTimeout.D() < time.Second || c.HealthTimeout.D() > time.Hour {
		return bad("health_timeout", "%s is out of range (want 1s to 1h)", c.HealthTimeout)
	}
	if c.HealthFailure != "reboot" && c.HealthFailure != "wait" {
		return bad("health_failure", "%q is not one of reboot, wait", c.HealthFailure)
	}
	if c.OnCorrupt != "keep" && c.OnCorrupt != "format" {
		return bad("on_corrupt", "%q is not one of keep, format", c.OnCorrupt)
	}
	r := c.Reset
	if err := validateKeep(r.Keep); err != nil {
		return bad("reset.keep", "%v", err)
	}
	if _, err := KeyCode(r.ButtonKey); err != nil {
		return bad("reset.button_key", "%v", err)
	}
	switch {
	case r.ButtonDevice != "" && !strings.HasPrefix(r.ButtonDevice, "/dev/"):
		return bad("reset.button_device", "%q is not a /dev/input/event* path", r.ButtonDevice)
	case r.ButtonWindow.D() > time.Minute:
		return bad("reset.button_window", "%s is too long (at most 1m: it delays every boot)", r.ButtonWindow)
	case r.ButtonWindow > 0 && r.ButtonHold > r.ButtonWindow:
		return bad("reset.button_hold", "%s is longer than button_window (%s)", r.ButtonHold, r.ButtonWindow)
	}
	return nil
}

// validateKeep checks a keep-list: absolute, clean, not the root, not
// climbing out.
func validateKeep(keep []string) error {
	for _, k := range keep {
		if !strings.HasPrefix(k, "/") || path.Clean(k) != k || k == "/" || strings.Contains(k, "/../") {
			return fmt.Errorf("keep path %q: want an absolute, clean path below / (e.g. /etc/dropbear)", k)
		}
	}
	return nil
}

// ParseInit parses init.toml. On any error it returns DefaultInit() with
// the error, so the device boots with defaults and says which line was wrong.
func ParseInit(name string, data []byte) (Init, error) {
	c := DefaultInit()
	if err := decode(name, data, &c); err != nil {
		return DefaultInit(), err
	}
	if err := c.validate(name, ""); err != nil {
		return DefaultInit(), withLine(err, data)
	}
	return c, nil
}

// LoadInit reads an init config; a missing file means defaults.
func LoadInit(path string) (Init, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return DefaultInit(), nil
	}
	if err != nil {
		return DefaultInit(), err
	}
	return ParseInit(path, data)
}

// Encode writes the config as TOML that ParseInit reads back.
func (c Init) Encode() ([]byte, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Image is image.toml: what `ovroot build` assembles.
type Image struct {
	Arch       layout.Arch `toml:"arch"`
	Kernel     string      `toml:"kernel"`
	ModulesDir string      `toml:"modules_dir"`
	Modules    []string    `toml:"modules"`
	Rootfs     string      `toml:"rootfs"`
	// Layers are OCI layer tarballs (ovrootctl backup writes one) applied
	// in order on top of the rootfs, whiteouts included.
	Layers []string `toml:"layers"`
	// Layer, instead of rootfs, is a root of stacked read-only layers,
	// bottom first ([[layer]] tables): each its own squashfs, stacked by
	// the init as overlay lowers (layout/layers.go).
	Layer       []Layer `toml:"layer"`
	Cmdline     string  `toml:"cmdline"`
	Compression string  `toml:"squashfs_compression"`
	BootSize    Size    `toml:"boot_size"`
	RootSize    Size    `toml:"root_size"`
	DataSize    Size    `toml:"data_size"`
	// E2fsck is a static e2fsck for the arch, carried to repair the data
	// partition; "" = found or fetched by ovroot build, E2fsckNone = none.
	E2fsck string `toml:"e2fsck"`
	// Ctl adds a static ovrootctl for the arch at /usr/sbin/ovrootctl
	// unless the rootfs has one.
	Ctl bool `toml:"ctl"`
	// EmergencyShell carries u-root's rush and a few commands in the
	// initramfs, started on the console when no root can be built.
	EmergencyShell bool `toml:"emergency_shell"`
	// Verity appends a dm-verity hash tree to each root and puts its root
	// hash on the boot entry's command line (ovroot.verity=): the init
	// checks every block of the root before it mounts it.
	Verity bool `toml:"verity"`
	Init   Init `toml:"init"`
	// Slots is 1 (one root partition, rootfs) or 2 (A/B: rootfs_a and
	// rootfs_b, upgraded with update bundles).
	Slots int `toml:"slots"`
	// Board names the hardware the image is for; an update bundle for
	// another board is refused. "" = "generic".
	Board string `toml:"board"`
	// Boot is how firmware starts the image from its disk.
	Boot Boot `toml:"boot"`
	// Update is how the image's bundles are signed and what the device
	// accepts.
	Update Update `toml:"update"`

	file string // where it was read from, for errors
	src  []byte
}

// Boot is image.toml's [boot] table.
type Boot struct {
	// Loader is uefi, uboot or none; "" = the arch's default
	// (layout.Arch.DefaultLoader).
	Loader string `toml:"loader"`
	// LoaderFile is the UEFI loader binary put on the ESP as
	// EFI/BOOT/BOOT<arch>.EFI; "" = Debian's systemd-boot, found or
	// fetched by ovroot build. A vendor's build or a signed shim goes here.
	LoaderFile string `toml:"loader_file"`
	// Tries is how many trial boots a new root slot gets before the
	// loader falls back to the other slot; 0 = layout.DefaultTries.
	Tries int `toml:"tries"`
}

// Update is image.toml's [update] table (two-slot images).
type Update struct {
	// Version orders releases (layout.ParseVersion: numbers separated by
	// dots); "" = "0". It goes into the root and the bundle's manifest.
	Version string `toml:"version"`
	// SignKey is the minisign secret key that signs the bundle (ovroot
	// keygen); "" = unsigned, with a warning.
	SignKey string `toml:"sign_key"`
	// TrustedKeys are minisign public keys put into the root
	// (layout.TrustedKeysDir): the device installs bundles signed by one of
	// them.
	TrustedKeys []string `toml:"trusted_keys"`
	// AllowUnsigned lets the device install unsigned bundles
	// (development images).
	AllowUnsigned bool `toml:"allow_unsigned"`
	// AllowDowngrade lets `ovrootctl upgrade --allow-downgrade` install
	// an older version.
	AllowDowngrade bool `toml:"allow_downgrade"`
	// CA is a PEM bundle on the device (an absolute path in the root,
	// read from its read-only lower) that `ovrootctl upgrade https://...`
	// trusts instead of the system roots.
	CA string `toml:"ca"`
	// AllowHTTP lets `ovrootctl upgrade http://...` fetch over plain
	// HTTP (a lab; the bundle's signature is checked all the same).
	AllowHTTP bool `toml:"allow_http"`
	// Network puts the network code (HTTP with resume, TLS) into the
	// image's ovrootctl, so `ovrootctl upgrade https://...` works; without
	// it ovrootctl is 3 MB smaller and takes files and block devices only.
	// CA and AllowHTTP imply it.
	Network bool `toml:"network"`
}

// NetworkUpdates says whether the image's ovrootctl fetches bundles over
// the network: [update] network, or a key that only makes sense with it.
func (u Update) NetworkUpdates() bool { return u.Network || u.CA != "" || u.AllowHTTP }

// ReleaseVersion is the [update] version, "0" when none is set.
func (u Update) ReleaseVersion() string {
	if u.Version == "" {
		return "0"
	}
	return u.Version
}

// Loader is the loader the image boots through: the [boot] loader key, or
// the arch's default. Validate has checked it.
func (im *Image) Loader() layout.Loader {
	if im.Boot.Loader == "" {
		return im.Arch.DefaultLoader()
	}
	return layout.Loader(im.Boot.Loader)
}

// E2fsckNone as the e2fsck key builds an image without e2fsck on purpose.
const E2fsckNone = "none"

// DefaultModules are the modules an image carries unless it says otherwise:
// the QEMU machines' disks are virtio-blk-pci on every arch; the closure
// adds dependencies (virtio, virtio_ring, crc32c for ext4, ...). The list
// is the same for every arch: what a kernel has built in (virtio on arm64
// and armmp, the PCI host bridge of QEMU's virt board) the closure leaves
// out.
func DefaultModules(a layout.Arch) []string {
	return []string{"virtio_pci", "virtio_blk", "squashfs", "overlay", "ext4"}
}

// Upper bounds of the partition sizes: anything larger is a typo, or an
// image file no one can copy to a device.
const (
	MaxBootSize Size = 4 << 30
	MaxRootSize Size = 64 << 30
	MaxDataSize Size = 64 << 30
)

var compressions = []string{"gzip", "xz", "zstd", "lz4", "lzo"}

// DefaultImage is an image spec with every default for the arch.
func DefaultImage(a layout.Arch) *Image {
	im := &Image{
		Arch:           a,
		Compression:    "gzip",
		BootSize:       128 << 20,
		DataSize:       256 << 20,
		Init:           DefaultInit(),
		EmergencyShell: true,
		Ctl:            true,
	}
	im.applyArchDefaults()
	return im
}

func (im *Image) applyArchDefaults() {
	if !im.Arch.Valid() {
		return
	}
	if im.Modules == nil {
		im.Modules = DefaultModules(im.Arch)
	}
	if im.Cmdline == "" {
		im.Cmdline = "console=" + im.Arch.Console() + " panic=-1"
	}
}

// archText decodes the arch key with the names ParseArch accepts.
type archText layout.Arch

func (a *archText) UnmarshalText(b []byte) error {
	v, err := layout.ParseArch(string(b))
	*a = archText(v)
	return err
}

// ParseImage parses image.toml and applies defaults. Required keys are
// checked by Validate, after command-line flags have been applied.
func ParseImage(name string, data []byte) (*Image, error) {
	var raw struct {
		Arch  archText `toml:"arch"`
		Slots *int     `toml:"slots"`
		Boot  struct {
			Tries *int `toml:"tries"`
		} `toml:"boot"`
	}
	im := DefaultImage("")
	if err := decode(name, data, im); err != nil {
		return nil, err
	}
	// Decoded again on its own so that "aarch64" becomes "arm64" and a bad
	// value is reported with its line, and so that a key set to 0 is told
	// from one left out (0 would otherwise pass for the default).
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, tomlError(name, data, err)
	}
	if raw.Slots != nil && *raw.Slots == 0 {
		return nil, withLine(&Error{File: name, Key: "slots", Msg: "0 is not a number of root slots (1, or 2 for A/B updates; leave the key out for 1)"}, data)
	}
	if raw.Boot.Tries != nil && *raw.Boot.Tries == 0 {
		return nil, withLine(&Error{File: name, Key: "boot.tries", Msg: fmt.Sprintf("0 trial boots would abandon a new slot before it ran (want 1 to 99; leave the key out for %d)", layout.DefaultTries)}, data)
	}
	im.Arch = layout.Arch(raw.Arch)
	im.file, im.src = name, data
	im.applyArchDefaults()
	return im, nil
}

// SetArch sets the arch as the file's arch key would have: keys left out
// get the arch's defaults (modules, cmdline), and another arch's defaults
// are replaced. Flags over a file give the image the same keys in the file
// would.
func (im *Image) SetArch(a layout.Arch) {
	if im.Arch.Valid() && im.Arch != a {
		old := DefaultImage(im.Arch)
		if im.Cmdline == old.Cmdline {
			im.Cmdline = ""
		}
		if slices.Equal(im.Modules, old.Modules) {
			im.Modules = nil
		}
	}
	im.Arch = a
	im.applyArchDefaults()
}

// Layer is one [[layer]] of a stacked root.
type Layer struct {
	// Name is the layer's mount point under /run/ovroot/layers.
	Name string `toml:"name"`
	// Rootfs is what the layer holds: a directory, a tarball or a
	// container image, as rootfs; .wh. entries of a tarball (and 0/0
	// character devices and opaque directories of a directory) are kept
	// as whiteouts that hide what the layers below hold.
	Rootfs string `toml:"rootfs"`
}

// File is the file the spec was read from ("" when built from flags).
func (im *Image) File() string { return im.file }

// LoadImage reads image.toml and resolves relative paths against its
// directory.
func LoadImage(path string) (*Image, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	im, err := ParseImage(path, data)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	paths := []*string{&im.Kernel, &im.ModulesDir, &im.Rootfs, &im.E2fsck, &im.Boot.LoaderFile, &im.Update.SignKey}
	for i := range im.Update.TrustedKeys {
		paths = append(paths, &im.Update.TrustedKeys[i])
	}
	for i := range im.Layers {
		paths = append(paths, &im.Layers[i])
	}
	for i := range im.Layer {
		paths = append(paths, &im.Layer[i].Rootfs)
	}
	for _, p := range paths {
		if *p != "" && *p != E2fsckNone && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return im, nil
}

// checkLayers checks rootfs and [[layer]]: one of them, names that can be
// mount points, each once, at most layout.MaxLayers.
func (im *Image) checkLayers(bad func(key, format string, args ...any) error) error {
	if len(im.Layer) == 0 {
		if im.Rootfs == "" {
			return bad("rootfs", "required key missing (or [[layer]] tables for a stacked root)")
		}
		return nil
	}
	if im.Rootfs != "" {
		return bad("rootfs", "given with [[layer]] tables: a stacked root's bottom layer is its first [[layer]]; drop one")
	}
	if len(im.Layers) > 0 {
		return bad("layers", "given with [[layer]] tables: make each a [[layer]] (a layer tarball's .wh. entries stay whiteouts there)")
	}
	if len(im.Layer) < 2 {
		return bad("layer", "one [[layer]] is a plain root: give it as rootfs, or add the layers that go on top")
	}
	if len(im.Layer) > layout.MaxLayers {
		return bad("layer", "%d [[layer]] tables: at most %d", len(im.Layer), layout.MaxLayers)
	}
	var seen []string
	for i, l := range im.Layer {
		nth := fmt.Sprintf("[[layer]] number %d", i+1)
		bad := func(key, format string, args ...any) error {
			err := bad(key, format, args...)
			var e *Error
			if errors.As(err, &e) {
				e.Line = tableKeyLine(string(im.src), "layer", i, strings.TrimPrefix(key, "layer."))
			}
			return err
		}
		if l.Name == "" {
			return bad("layer.name", "%s: required key missing", nth)
		}
		if err := layout.CheckLayerName(l.Name); err != nil {
			return bad("layer.name", "%s: %v", nth, err)
		}
		if contains(seen, l.Name) {
			return bad("layer.name", "%s: the name %q is taken by an earlier layer", nth, l.Name)
		}
		seen = append(seen, l.Name)
		if strings.TrimSpace(l.Rootfs) == "" {
			return bad("layer.rootfs", "%s (%s): required key missing", nth, l.Name)
		}
	}
	return nil
}

// tableKeyLine is the line of key in the nth (from 0) [[table]] of src,
// or of that table's header when the key is not in it; 0 when there is no
// such table.
func tableKeyLine(src, table string, nth int, key string) int {
	header := regexp.MustCompile(`^\s*\[\[\s*` + regexp.QuoteMeta(table) + `\s*\]\]`)
	keyRe := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(key) + `"?\s*=`)
	n, at := -1, 0
	for i, l := range strings.Split(src, "\n") {
		switch {
		case header.MatchString(l):
			n++
			if n == nth {
				at = i + 1
			}
		case n == nth && strings.HasPrefix(strings.TrimSpace(l), "["):
			return at
		case n == nth && keyRe.MatchString(l):
			return i + 1
		}
	}
	return at
}

// Validate checks the whole spec after flags have been applied.
func (im *Image) Validate() error {
	file := im.file
	if file == "" {
		file = "image spec"
	}
	bad := func(key, format string, args ...any) error {
		return withLine(&Error{File: file, Key: key, Msg: fmt.Sprintf(format, args...)}, im.src)
	}
	if im.Arch == "" {
		return bad("arch", "required key missing (%s)", layout.ArchNames)
	}
	if !im.Arch.Valid() {
		return bad("arch", "unknown arch %q (want %s)", im.Arch, layout.ArchNames)
	}
	for _, k := range []struct{ key, val string }{{"kernel", im.Kernel}, {"modules_dir", im.ModulesDir}} {
		if k.val == "" {
			return bad(k.key, "required key missing")
		}
	}
	if err := im.checkLayers(bad); err != nil {
		return err
	}
	for i, l := range im.Layers {
		if strings.TrimSpace(l) == "" {
			return bad("layers", "entry %d is empty", i+1)
		}
	}
	if !contains(compressions, im.Compression) {
		return bad("squashfs_compression", "%q is not supported (want one of %s)", im.Compression, strings.Join(compressions, ", "))
	}
	if im.BootSize < 34<<20 {
		return bad("boot_size", "%s is too small (FAT32 needs at least 34MiB)", im.BootSize)
	}
	if im.DataSize < 16<<20 {
		return bad("data_size", "%s is too small (at least 16MiB)", im.DataSize)
	}
	for _, b := range []struct {
		key  string
		v    Size
		max  Size
		hint string
	}{
		{"boot_size", im.BootSize, MaxBootSize, "it holds a kernel and an initramfs"},
		{"root_size", im.RootSize, MaxRootSize, "0 fits the squashfs"},
		{"data_size", im.DataSize, MaxDataSize, "the image holds the whole data partition: size it for the smallest device and grow it there"},
	} {
		if b.v > b.max {
			return bad(b.key, "%s is larger than ovroot builds (at most %s; %s)", b.v, b.max, b.hint)
		}
	}
	if err := checkCmdline(im.Cmdline, im.Arch, im.Loader(), im.Verity); err != nil {
		return bad("cmdline", "%v", err)
	}
	for i, m := range im.Modules {
		if strings.TrimSpace(m) == "" || strings.ContainsAny(m, " /") {
			return bad("modules", "entry %d (%q) is not a module name", i+1, m)
		}
	}
	if im.Boot.Loader != "" {
		if _, err := layout.ParseLoader(im.Boot.Loader); err != nil {
			return bad("boot.loader", "%v", err)
		}
	}
	if err := im.Arch.Supports(im.Loader()); err != nil {
		return bad("boot.loader", "%v", err)
	}
	if im.Boot.LoaderFile != "" && im.Loader() != layout.LoaderUEFI {
		return bad("boot.loader_file", "is a UEFI loader binary, but the image boots through %s (set loader = \"uefi\" or leave loader_file out)", im.Loader())
	}
	switch im.Slots {
	case 0, 1:
	case 2:
		if l := im.Loader(); l != layout.LoaderUEFI && l != layout.LoaderUBoot {
			return bad("slots", "2 needs a loader that counts trial boots, uefi or uboot (the image boots through %s)", l)
		}
	default:
		return bad("slots", "%d is not 1 or 2", im.Slots)
	}
	if im.Board != "" && !boardRE().MatchString(im.Board) {
		return bad("board", "%q is not a board name (lower-case letters, digits, '.', '_' and '-', at most 64)", im.Board)
	}
	if im.Boot.Tries < 0 || im.Boot.Tries > 99 {
		return bad("boot.tries", "%d is out of range (want 1 to 99; 0 = %d)", im.Boot.Tries, layout.DefaultTries)
	}
	if err := im.Init.validate(file, "init."); err != nil {
		return withLine(err, im.src)
	}
	u := im.Update
	if u.Version != "" {
		if _, err := layout.ParseVersion(u.Version); err != nil {
			return bad("update.version", "%v", err)
		}
	}
	for i, k := range u.TrustedKeys {
		if strings.TrimSpace(k) == "" {
			return bad("update.trusted_keys", "entry %d is empty", i+1)
		}
	}
	if u.CA != "" && (!strings.HasPrefix(u.CA, "/") || path.Clean(u.CA) != u.CA) {
		return bad("update.ca", "%q is not a clean absolute path: give where the CA bundle is on the device, e.g. /etc/ssl/updates-ca.pem", u.CA)
	}
	if im.Slots != 2 && (u.Version != "" || u.SignKey != "" || len(u.TrustedKeys) > 0 || u.AllowUnsigned || u.AllowDowngrade || u.NetworkUpdates()) {
		return bad("update", "is for two-slot images, which take update bundles: set slots = 2 (this image has one root slot)")
	}
	return nil
}

// commandLineSize is the kernel's COMMAND_LINE_SIZE for the arch (Linux
// 6.1, arch/*/include/uapi/asm/setup.h; arm64 was 2048 before 6.2 made it
// 4096, and Debian's kernels of either kind must boot), its terminating NUL
// included: the kernel silently cuts a longer line.
func commandLineSize(a layout.Arch, l layout.Loader) int {
	n := 2048
	if a == layout.ARM {
		n = 1024
	}
	// U-Boot builds the command line in its shell (boot.scr's setenv
	// bootargs, extlinux's append), whose line buffer (CONFIG_SYS_CBSIZE)
	// is 1024 bytes on many boards.
	if l == layout.LoaderUBoot {
		n = min(n, 1024)
	}
	return n
}

// cmdlineReserve is what ovroot adds to the image's command line in boot
// entries (ovroot.loader=uboot ovroot.slot=a ovroot.build=<16 hex> panic=5
// ovroot.try=NN/0xNN: under 100 bytes), with room to spare.
const cmdlineReserve = 128

// verityParamLen is the most ovroot.verity= takes with its space:
// "ovroot.verity=sha256:" + a block count + ":" + salt + ":" + root hash,
// 32-byte salt and hash in hex.
const verityParamLen = len(" ovroot.verity=sha256:") + 20 + 1 + 64 + 1 + 64

// checkCmdline refuses a command line that would not reach the kernel as
// written: a control character (a newline from a TOML multi-line string
// splits a boot entry: the kernel gets half of it) or more bytes than the
// kernel and the loader take.
func checkCmdline(c string, a layout.Arch, l layout.Loader, verity bool) error {
	for i, r := range c {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("control character %q at byte %d: a command line is one line of printable text (a newline would split the boot entry)", r, i)
		}
	}
	reserve := cmdlineReserve
	if verity {
		reserve += verityParamLen
	}
	if strings.Contains(" "+c, " ovroot.verity=") {
		return fmt.Errorf("has ovroot.verity=: the build adds it, with the root hash of the root it makes (set verity = true)")
	}
	if max := commandLineSize(a, l) - 1 - reserve; len(c) > max {
		return fmt.Errorf("%d bytes, more than the %d a %s image with loader %s can pass (the kernel's COMMAND_LINE_SIZE %d, less %d for ovroot's own parameters)", len(c), max, a, l, commandLineSize(a, l), reserve)
	}
	return nil
}

// The regexps are compiled on first use, not at package init: the init
// (PID 1) imports this package, and compiling them was a quarter of its
// package initialisation (GODEBUG=inittrace=1), which every boot pays.
var boardRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`) })

var typeErrRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`line (\d+) \(last key "([^"]*)"\): (.*)`) })

// decode strictly decodes data into v: unknown keys are errors.
func decode(name string, data []byte, v any) error {
	md, err := toml.Decode(string(data), v)
	if err != nil {
		return tomlError(name, data, err)
	}
	known := knownKeys(v)
	for _, k := range md.Undecoded() {
		key := k.String()
		e := &Error{File: name, Key: key, Msg: "unknown key"}
		if c := closest(key, known); c != "" {
			e.Msg += fmt.Sprintf(" (did you mean %s?)", c)
		}
		return withLine(e, data)
	}
	return nil
}

// tomlError turns BurntSushi's errors into an *Error with line and key.
func tomlError(name string, data []byte, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
	}
	if m := typeErrRE().FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: line, Key: m[2], Msg: m[3]}
	}
	return &Error{File: name, Msg: err.Error()}
}

// withLine fills in the line of an *Error's key from the source.
func withLine(err error, src []byte) error {
	var e *Error
	if errors.As(err, &e) && e.Line == 0 && src != nil {
		e.Line = keyLines(string(src))[e.Key]
	}
	return err
}

// knownKeys lists the dotted keys a config struct accepts.
func knownKeys(v any) []string {
	keys := tomlKeys(reflect.TypeOf(v).Elem(), "")
	sort.Strings(keys)
	return keys
}

// tomlKeys are the keys of a struct's toml tags, tables as "name" and
// their keys as "name.key" (a type that reads itself from text, a size or
// a duration, is one key).
func tomlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	text := reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, prefix+name)
		if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(text) {
			keys = append(keys, tomlKeys(f.Type, prefix+name+".")...)
		}
	}
	return keys
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
