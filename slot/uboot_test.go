package slot

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

func TestEnvRoundTrip(t *testing.T) {
	e := Entry{Slot: layout.SlotB, Generation: 12, BuildID: "0123456789abcdef", Options: "console=ttyAMA0 quiet", Loader: layout.LoaderUBoot, Release: "6.1.0-test"}
	for _, tries := range []int{0, 3, 10, MaxTries} {
		text := e.Env(tries)
		got, gotTries, err := ParseEnv(text)
		if err != nil || got != e || gotTries != tries {
			t.Errorf("ParseEnv(Env(%d)) = %+v, %d, %v; want %+v", tries, got, gotTries, err, e)
		}
		// Every cut short of the whole file is refused: boot.scr and
		// ListEntries never take a torn entry for a real one.
		for n := 0; n < len(text)-1; n++ { // the last newline aside
			if _, _, err := ParseEnv(text[:n]); err == nil {
				t.Fatalf("ParseEnv of the first %d of %d bytes: no error", n, len(text))
			}
		}
	}
	if !strings.Contains(e.Env(10), "ovroot_tries=0xa\n") || !strings.Contains(e.Env(0), "ovroot_gen=0xc\n") {
		t.Errorf("numbers are not hex with 0x, as U-Boot's itest reads them:\n%s", e.Env(10))
	}
	if !strings.Contains(e.Env(3), "ovroot_args=console=ttyAMA0 quiet ovroot.loader=uboot ovroot.slot=b ovroot.build=0123456789abcdef panic=5\n") {
		t.Errorf("args are not the entry's command line:\n%s", e.Env(3))
	}
	for _, bad := range []string{
		strings.Replace(e.Env(3), "ovroot_tries=0x3", "ovroot_tries=0x64", 1),
		strings.Replace(e.Env(3), "ovroot_slot=b", "ovroot_slot=a", 1),
		strings.Replace(e.Env(3), "ovroot_gen=0xc", "ovroot_gen=twelve", 1),
	} {
		if _, _, err := ParseEnv(bad); err == nil {
			t.Errorf("ParseEnv accepted:\n%s", bad)
		}
	}
}

func TestMarkerNames(t *testing.T) {
	for _, c := range []struct {
		file string
		slot layout.Slot
		n    int
		ok   bool
	}{
		{"ovroot-a.try1", layout.SlotA, 1, true},
		{"ovroot-b.tryf", layout.SlotB, 15, true},
		{"ovroot-b.try63", layout.SlotB, 99, true},
		{"ovroot-b.try0", "", 0, false},
		{"ovroot-c.try1", "", 0, false},
		{"ovroot-b.try", "", 0, false},
		{"ovroot-b.tryG", "", 0, false},
		{"ovroot-b.env", "", 0, false},
		{"ovroot-b.try1.tmp", "", 0, false},
	} {
		sl, n, ok := ParseMarker(c.file)
		if sl != c.slot || n != c.n || ok != c.ok {
			t.Errorf("ParseMarker(%q) = %q, %d, %v; want %q, %d, %v", c.file, sl, n, ok, c.slot, c.n, c.ok)
		}
		if ok && MarkerName(sl, n) != c.file {
			t.Errorf("MarkerName(%q, %d) = %q, want %q", sl, n, MarkerName(sl, n), c.file)
		}
	}
	if sl, ok := ParseEnvName("ovroot-a.env"); !ok || sl != layout.SlotA {
		t.Error("ovroot-a.env is not slot a's entry")
	}
	for _, f := range []string{"ovroot-a.env.tmp", "ovroot-c.env", "ovroot-a.conf", "ovroot-.env"} {
		if _, ok := ParseEnvName(f); ok {
			t.Errorf("ParseEnvName(%q) ok", f)
		}
	}
}

func TestParseTry(t *testing.T) {
	for val, want := range map[string][2]int{"1/3": {1, 3}, "2/0x3": {2, 3}, "a/0x63": {10, 99}, "0x3/0x3": {3, 3}} {
		d, n, err := ParseTry(val)
		if err != nil || d != want[0] || n != want[1] {
			t.Errorf("ParseTry(%q) = %d, %d, %v; want %v", val, d, n, err, want)
		}
	}
	for _, val := range []string{"", "1", "0/3", "4/3", "1/0", "1/0x64", "x/3", "1/3/4"} {
		if _, _, err := ParseTry(val); err == nil {
			t.Errorf("ParseTry(%q): no error", val)
		}
	}
}

// TestUImageScript checks the header as U-Boot's image_check_hcrc,
// image_check_dcrc and image_source_script read it.
func TestUImageScript(t *testing.T) {
	script := BootScript(layout.ARM64)
	img := UImageScript(layout.ARM64, "ovroot A/B boot", script)
	h := append([]byte(nil), img[:64]...)
	be := binary.BigEndian
	if be.Uint32(h) != 0x27051956 {
		t.Fatalf("magic %#x", be.Uint32(h))
	}
	hcrc := be.Uint32(h[4:])
	be.PutUint32(h[4:], 0)
	if crc32.ChecksumIEEE(h) != hcrc {
		t.Error("header CRC does not match")
	}
	data := img[64:]
	if int(be.Uint32(h[12:])) != len(data) || crc32.ChecksumIEEE(data) != be.Uint32(h[24:]) {
		t.Error("data size or CRC does not match")
	}
	if h[28] != 5 || h[29] != 22 || h[30] != 6 || h[31] != 0 {
		t.Errorf("os/arch/type/comp = %v, want linux/arm64/script/none", h[28:32])
	}
	if be.Uint32(data) != uint32(len(script)) || be.Uint32(data[4:]) != 0 || string(data[8:]) != script {
		t.Error("data is not the length table (script, 0) and the script")
	}
}

func TestBootScript(t *testing.T) {
	arm64, arm := BootScript(layout.ARM64), BootScript(layout.ARM)
	if !strings.Contains(arm64, "\n    booti ${kernel_addr_r}") || !strings.Contains(arm, "\n    bootz ${kernel_addr_r}") {
		t.Error("arm64 must boot with booti, arm with bootz")
	}
	for _, want := range []string{
		"loader/entries/ovroot-a.env", "loader/entries/ovroot-b.env",
		"loader/entries/ovroot-b.try${ovroot_n} 1", // the marker U-Boot creates
		"setenv ovroot_b_try \" ovroot.try=${ovroot_n}/${ovroot_b_tries}\"",
		"setenv bootargs \"${ovroot_b_args}${ovroot_b_try}\"",
		"for i in 1 2 3 4 5 6 7 8 9 a b c d e f 10 ", // hex, as setexpr writes ovroot_n
		" 63; do",
	} {
		if !strings.Contains(arm64, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	// U-Boot's shell: every if closes, every for ends.
	count := func(word string) int {
		n := 0
		for _, f := range strings.FieldsFunc(arm64, func(r rune) bool { return r == ' ' || r == '\n' || r == ';' }) {
			if f == word {
				n++
			}
		}
		return n
	}
	if count("if") != count("fi") || count("for") != count("done") || count("then") != count("if")+count("elif") {
		t.Errorf("unbalanced: %d if, %d fi, %d then, %d elif, %d for, %d done", count("if"), count("fi"), count("then"), count("elif"), count("for"), count("done"))
	}
}
