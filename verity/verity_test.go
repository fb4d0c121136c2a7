package verity

import (
	"bytes"
	"strings"
	"testing"
)

func TestParam(t *testing.T) {
	info := Info{DataBlocks: 3, Salt: []byte{0, 0xff}, RootHash: bytes.Repeat([]byte{0xab}, 32)}
	got, err := ParseParam(info.Param())
	if err != nil || got.Param() != info.Param() {
		t.Fatalf("ParseParam(%q) = %+v, %v", info.Param(), got, err)
	}
	want := "1 /dev/vda3 /dev/vda3 4096 4096 3 4 sha256 " + strings.Split(info.Param(), ":")[3] + " " + strings.Split(info.Param(), ":")[2]
	if tb := info.Table("/dev/vda3"); tb != want {
		t.Errorf("Table = %q\nwant    %q", tb, want)
	}
	for _, bad := range []string{"", "sha256", "md5:3:00:" + strings.Repeat("ab", 32), "sha256:0:00:" + strings.Repeat("ab", 32),
		"sha256:x:00:" + strings.Repeat("ab", 32), "sha256:3:0g:" + strings.Repeat("ab", 32), "sha256:3:00:abcd", "sha256:3:00:" + strings.Repeat("ab", 32) + ":x"} {
		if _, err := ParseParam(bad); err == nil {
			t.Errorf("ParseParam(%q) accepted", bad)
		}
	}
}

// FuzzParseParam: the kernel command line is the device's; whatever it
// says is refused or gives a table of the values it says.
func FuzzParseParam(f *testing.F) {
	f.Add("sha256:3:00ff:" + strings.Repeat("ab", 32))
	f.Add("sha256:18446744073709551615::" + strings.Repeat("ab", 32))
	f.Fuzz(func(t *testing.T, s string) {
		i, err := ParseParam(s)
		if err != nil {
			return
		}
		if i.DataBlocks == 0 || len(i.RootHash) != 32 || len(i.Salt) > 256 || i.HashOffset() <= 0 {
			t.Fatalf("ParseParam(%q) = %+v", s, i)
		}
		again, err := ParseParam(i.Param())
		if err != nil || again.Param() != i.Param() {
			t.Fatalf("round trip of %q: %q, %v", s, again.Param(), err)
		}
		if f := strings.Fields(i.Table("/dev/x")); len(f) != 10 {
			t.Fatalf("table %q", i.Table("/dev/x"))
		}
	})
}
