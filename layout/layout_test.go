package layout

import (
	"strings"
	"testing"
)

func TestParseArch(t *testing.T) {
	cases := []struct {
		in   string
		want Arch
	}{
		{"x86_64", X86_64}, {"amd64", X86_64},
		{"arm64", ARM64}, {"aarch64", ARM64},
		{"arm", ARM}, {"armhf", ARM}, {"armv7", ARM},
	}
	for _, tc := range cases {
		got, err := ParseArch(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseArch(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "x86", "i386", "armel", "armv6", "ARM", "riscv64"} {
		_, err := ParseArch(in)
		if err == nil {
			t.Errorf("ParseArch(%q): no error", in)
			continue
		}
		for _, name := range []string{"x86_64", "arm64", "arm"} {
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), `"`+in+`"`) {
				t.Errorf("ParseArch(%q) = %v, want an error naming %q and %s", in, err, in, name)
			}
		}
	}
}

// Every arch users may name has the facts the tools need, and they are
// the documented ones (Discoverable Partitions Specification for the root
// type; Debian's names for the kernel cache).
func TestArchTable(t *testing.T) {
	cases := []struct {
		arch                                   Arch
		goarch, variant, debian, root, console string
	}{
		{X86_64, "amd64", "GOAMD64=v1", "amd64", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "ttyS0"},
		{ARM64, "arm64", "GOARM64=v8.0", "arm64", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "ttyAMA0"},
		{ARM, "arm", "GOARM=7", "armhf", "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", "ttyAMA0"},
	}
	if len(cases) != len(Arches) {
		t.Fatalf("Arches = %v; this test covers %d", Arches, len(cases))
	}
	for i, tc := range cases {
		a := tc.arch
		if Arches[i] != a || !a.Valid() {
			t.Errorf("Arches[%d] = %q (valid %v), want %q", i, Arches[i], Arches[i].Valid(), a)
		}
		got := []string{a.GOARCH(), a.GoVariant(), a.DebianArch(), a.RootTypeGUID(), a.Console()}
		want := []string{tc.goarch, tc.variant, tc.debian, tc.root, tc.console}
		for j := range got {
			if got[j] != want[j] {
				t.Errorf("%s: %q, want %q", a, got[j], want[j])
			}
		}
		if p, err := ParseArch(string(a)); err != nil || p != a {
			t.Errorf("ParseArch(%q) = %q, %v: the canonical name must parse", a, p, err)
		}
	}
	if Arch("mips").Valid() {
		t.Error(`Arch("mips").Valid()`)
	}
}
