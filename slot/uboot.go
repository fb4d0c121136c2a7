package slot

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/ovroot/ovroot/layout"
)

// The U-Boot side of the scheme. U-Boot cannot rename a file, so the
// counter is not in a file name as with systemd-boot:
//
//   - loader/entries/ovroot-X.env is slot X's entry, in the text format
//     of U-Boot's `env import -t`: its generation, its tries (0 =
//     confirmed) and its kernel command line. Only the device's Linux
//     side writes it, whole, through a temporary file and a rename.
//   - loader/entries/ovroot-X.tryN (N in hex, 1, 2, ...) is created by
//     boot.scr when it boots X on trial for the Nth time. A boot only ever
//     creates a new small file, never rewrites one, so a power cut in
//     U-Boot's FAT write at worst leaves a marker that counts.
//
// A slot is on trial while its tries are not 0, abandoned once it has as
// many markers as tries. mark-good writes the entry with tries 0, then
// removes the markers; an upgrade removes the slot's entry and markers
// before it writes anything else.

// MaxTries is the most tries an entry can have (config: boot.tries).
const MaxTries = 99

// EnvFileName is slot s's entry file on a U-Boot image.
func EnvFileName(s layout.Slot) string { return EntryPrefix + string(s) + ".env" }

// MarkerName is the file boot.scr creates for the nth counted boot of s.
func MarkerName(s layout.Slot, n int) string {
	return fmt.Sprintf("%s%s.try%x", EntryPrefix, s, n)
}

// ParseEnvName reports whether file is a U-Boot entry file, and its slot.
func ParseEnvName(file string) (layout.Slot, bool) {
	rest, ok := strings.CutPrefix(file, EntryPrefix)
	if !ok {
		return "", false
	}
	s, ok := strings.CutSuffix(rest, ".env")
	sl := layout.Slot(s)
	return sl, ok && sl.Valid()
}

// ParseMarker reports whether file is a boot marker, its slot and number.
func ParseMarker(file string) (layout.Slot, int, bool) {
	rest, ok := strings.CutPrefix(file, EntryPrefix)
	if !ok || len(rest) < 1 {
		return "", 0, false
	}
	sl := layout.Slot(rest[:1])
	num, ok := strings.CutPrefix(rest[1:], ".try")
	if !ok || !sl.Valid() || num == "" || len(num) > 4 || strings.Trim(num, "0123456789abcdef") != "" {
		return "", 0, false
	}
	n, err := strconv.ParseUint(num, 16, 16)
	if err != nil || n == 0 {
		return "", 0, false
	}
	return sl, int(n), true
}

// Env is the entry as a U-Boot entry file with tries (0 = confirmed).
// Numbers are hex with 0x, as U-Boot's itest and setexpr read them. The
// last line, ovroot_ok=1, is how boot.scr and ListEntries tell a whole
// file from a cut one.
func (e Entry) Env(tries int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ovroot_slot=%s\n", e.Slot)
	fmt.Fprintf(&b, "ovroot_gen=%#x\n", e.Generation)
	fmt.Fprintf(&b, "ovroot_tries=%#x\n", tries)
	fmt.Fprintf(&b, "ovroot_build=%s\n", e.BuildID)
	fmt.Fprintf(&b, "ovroot_release=%s\n", e.Release)
	fmt.Fprintf(&b, "ovroot_args=%s\n", e.KernelCmdline())
	b.WriteString("ovroot_ok=1\n")
	return b.String()
}

// ParseEnv reads back what Env wrote.
func ParseEnv(text string) (e Entry, tries int, err error) {
	vals := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			vals[k] = v
		}
	}
	if vals["ovroot_ok"] != "1" {
		return e, 0, fmt.Errorf("incomplete: no ovroot_ok=1 line")
	}
	gen, err := strconv.ParseUint(vals["ovroot_gen"], 0, 31)
	if err != nil {
		return e, 0, fmt.Errorf("ovroot_gen %q is not a generation number", vals["ovroot_gen"])
	}
	t, err := strconv.ParseUint(vals["ovroot_tries"], 0, 8)
	if err != nil || t > MaxTries {
		return e, 0, fmt.Errorf("ovroot_tries %q is not a number of tries (0 to %d)", vals["ovroot_tries"], MaxTries)
	}
	e = parseOptions(vals["ovroot_args"])
	e.Generation, e.Release = int(gen), vals["ovroot_release"]
	if sl := layout.Slot(vals["ovroot_slot"]); sl != e.Slot {
		return e, 0, fmt.Errorf("ovroot_slot=%s but the command line boots slot %s", sl, e.Slot)
	}
	if !e.Slot.Valid() {
		return e, 0, fmt.Errorf("ovroot_args name no slot (%s=a or b)", layout.SlotParam)
	}
	return e, int(t), nil
}

// ParseTry reads ovroot.try=DONE/TRIES (hex, with or without 0x).
func ParseTry(val string) (done, tries int, err error) {
	d, t, ok := strings.Cut(val, "/")
	dn, err1 := strconv.ParseUint(strings.TrimPrefix(d, "0x"), 16, 8)
	tn, err2 := strconv.ParseUint(strings.TrimPrefix(t, "0x"), 16, 8)
	if !ok || err1 != nil || err2 != nil || dn == 0 || tn == 0 || dn > tn || tn > MaxTries {
		return 0, 0, fmt.Errorf("%s=%q: want DONE/TRIES in hex, 0 < DONE <= TRIES <= %#x", layout.TryParam, val, MaxTries)
	}
	return int(dn), int(tn), nil
}

// BootScript is boot.scr's text for a two-slot U-Boot image of arch
// (booti for arm64, bootz for 32-bit ARM). U-Boot's distro boot runs it
// with devtype, devnum and distro_bootpart naming the boot partition. It
// reads both entries, counts each one's markers, and boots what
// systemd-boot would: the highest generation among the slots that are
// confirmed or have tries left, else (nothing else is left) the highest
// one at all. A trial boot first creates its marker; when that write
// fails it boots the other slot if that one can boot, so a trial is never
// booted uncounted while there is a fallback. When the picked slot's
// kernel does not load or start, it boots the other slot if confirmed.
func BootScript(arch layout.Arch) string {
	bootCmd := "booti"
	if arch == layout.ARM {
		bootCmd = "bootz"
	}
	const part = "${devtype} ${devnum}:${distro_bootpart}"
	dir := layout.EntriesDir + "/"
	var nums []string
	for i := 1; i <= MaxTries; i++ {
		nums = append(nums, strconv.FormatInt(int64(i), 16))
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# ovroot A/B boot (generated by ovroot: see its README, Field updates)")
	w("setenv ovroot_pick")
	w("setenv ovroot_pick_gen 0")
	w("setenv ovroot_any")
	w("setenv ovroot_any_gen 0")
	for _, s := range layout.Slots {
		env := dir + EnvFileName(s)
		w("setenv ovroot_%s_ok", s)
		w("setenv ovroot_%s_boots", s)
		w("setenv ovroot_ok")
		w("setenv ovroot_slot")
		w("setenv ovroot_tries")
		w("setenv ovroot_gen")
		w("setenv ovroot_args")
		w("if test -e %s %s; then if load %s ${kernel_addr_r} %s; then env import -t ${kernel_addr_r} ${filesize}; fi; fi", part, env, part, env)
		w("if test \"${ovroot_ok}\" = \"1\" && test \"${ovroot_slot}\" = \"%s\"; then", s)
		w("  setenv ovroot_%s_ok 1", s)
		w("  setenv ovroot_%s_gen ${ovroot_gen}", s)
		w("  setenv ovroot_%s_tries ${ovroot_tries}", s)
		w("  setenv ovroot_%s_args \"${ovroot_args}\"", s)
		w("  setenv ovroot_%s_done 0", s)
		w("  setenv ovroot_more 1")
		w("  for i in %s; do", strings.Join(nums, " "))
		w("    if test \"${ovroot_more}\" = \"1\" && itest ${i} -le ${ovroot_tries}; then")
		w("      if test -e %s %s%s%s.try${i}; then setenv ovroot_%s_done ${i}; else setenv ovroot_more 0; fi", part, dir, EntryPrefix, s, s)
		w("    fi")
		w("  done")
		w("  if itest ${ovroot_gen} -gt ${ovroot_any_gen}; then setenv ovroot_any %s; setenv ovroot_any_gen ${ovroot_gen}; fi", s)
		w("  if itest ${ovroot_tries} -eq 0 || itest ${ovroot_%s_done} -lt ${ovroot_tries}; then", s)
		w("    setenv ovroot_%s_boots 1", s)
		w("    if itest ${ovroot_gen} -gt ${ovroot_pick_gen}; then setenv ovroot_pick %s; setenv ovroot_pick_gen ${ovroot_gen}; fi", s)
		w("  else")
		w("    echo \"ovroot: slot %s abandoned: tried ${ovroot_%s_done} of ${ovroot_tries} times, never confirmed\"", s, s)
		w("  fi")
		w("fi")
	}
	w("if test -z \"${ovroot_pick}\"; then setenv ovroot_pick ${ovroot_any}; fi")
	w("if test -z \"${ovroot_pick}\"; then echo \"ovroot: no slot entry in %s\"; exit; fi", layout.EntriesDir)
	// Per slot, unrolled: U-Boot's shell has no indirect variables.
	for _, s := range layout.Slots {
		o := s.Other()
		w("setenv ovroot_%s_try", s)
		w("if test \"${ovroot_pick}\" = \"%s\" && itest ${ovroot_%s_tries} -ne 0 && itest ${ovroot_%s_done} -lt ${ovroot_%s_tries}; then", s, s, s, s)
		w("  setexpr ovroot_n ${ovroot_%s_done} + 1", s)
		w("  mw.b ${kernel_addr_r} 0x31 1")
		w("  if fatwrite %s ${kernel_addr_r} %s%s%s.try${ovroot_n} 1; then", part, dir, EntryPrefix, s)
		w("    setenv ovroot_%s_try \" %s=${ovroot_n}/${ovroot_%s_tries}\"", s, layout.TryParam, s)
		w("    echo \"ovroot: slot %s on trial: boot ${ovroot_n} of ${ovroot_%s_tries}\"", s, s)
		w("  elif test \"${ovroot_%s_boots}\" = \"1\"; then", o)
		w("    echo \"ovroot: cannot count a trial boot of slot %s (fatwrite failed): booting slot %s\"", s, o)
		w("    setenv ovroot_pick %s", o)
		w("  else")
		w("    echo \"ovroot: cannot count a trial boot of slot %s (fatwrite failed) and no other slot boots: booting it uncounted\"", s)
		w("  fi")
		w("fi")
	}
	// The picked slot, then, if its kernel or initramfs does not load or
	// start, the other slot when it is confirmed: U-Boot would otherwise
	// stop at its prompt, where nothing counts or reboots.
	w("setenv ovroot_order ${ovroot_pick}")
	for _, s := range layout.Slots {
		o := s.Other()
		w("if test \"${ovroot_pick}\" = \"%s\" && test \"${ovroot_%s_ok}\" = \"1\" && itest ${ovroot_%s_tries} -eq 0; then setenv ovroot_order \"%s %s\"; fi", s, o, o, s, o)
	}
	w("setenv ovroot_fdt ${fdtcontroladdr}")
	w("if test -n \"${fdt_addr}\"; then setenv ovroot_fdt ${fdt_addr}; fi")
	w("for ovroot_s in ${ovroot_order}; do")
	w("  if test \"${ovroot_s}\" = \"a\"; then setenv bootargs \"${ovroot_a_args}${ovroot_a_try}\"; else setenv bootargs \"${ovroot_b_args}${ovroot_b_try}\"; fi")
	w("  echo \"ovroot: booting slot ${ovroot_s}\"")
	w("  if load %s ${kernel_addr_r} slot-${ovroot_s}/%s && load %s ${ramdisk_addr_r} slot-${ovroot_s}/%s; then", part, layout.KernelFile, part, layout.InitrdFile)
	w("    %s ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${ovroot_fdt}", bootCmd)
	w("  fi")
	w("  echo \"ovroot: booting slot ${ovroot_s} failed\"")
	w("done")
	return b.String()
}

// Legacy U-Boot image header fields (include/image.h).
const (
	uimageMagic      = 0x27051956
	uimageOSLinux    = 5
	uimageTypeScript = 6
)

// UImageScript wraps a script as `mkimage -A ARCH -O linux -T script -C
// none` does: a 64-byte legacy header, then the multi-file length table
// (the script's length, then 0) and the script. The time stamp is 0, so
// the same script gives the same bytes.
func UImageScript(arch layout.Arch, name, script string) []byte {
	archCode := map[layout.Arch]byte{layout.ARM: 2, layout.ARM64: 22, layout.X86_64: 24}[arch]
	data := make([]byte, 8, 8+len(script))
	binary.BigEndian.PutUint32(data, uint32(len(script)))
	data = append(data, script...)
	h := make([]byte, 64)
	binary.BigEndian.PutUint32(h[0:], uimageMagic)
	binary.BigEndian.PutUint32(h[12:], uint32(len(data)))
	binary.BigEndian.PutUint32(h[24:], crc32.ChecksumIEEE(data))
	h[28], h[29], h[30], h[31] = uimageOSLinux, archCode, uimageTypeScript, 0
	copy(h[32:63], name)
	binary.BigEndian.PutUint32(h[4:], crc32.ChecksumIEEE(h))
	return append(h, data...)
}
