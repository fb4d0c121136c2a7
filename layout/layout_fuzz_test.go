package layout

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseState: the state record is read by ovrootctl and the
// confirmer from a file anything could have written (/run is root's, but
// a torn or hand-edited copy must not crash them). What parses writes back
// to a record that parses to the same thing.
func FuzzParseState(f *testing.F) {
	f.Add(`{"mode":"persistent","root_device":"/dev/vda3","data_device":"/dev/vda4","formatted":false,"slot":{"slot":"b","build_id":"0185525636fa2ecc","trial":{"left":1}},"timings_ms":{"total":1287}}`)
	f.Add(`{"mode":"volatile","reason":"no data partition","reset":{"trigger":"cmdline","kept":["/etc/x"]}}`)
	f.Add(`{"mode":`)
	f.Fuzz(func(t *testing.T, data string) {
		s, err := ParseState([]byte(data))
		if err != nil {
			return
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("a parsed state does not marshal: %v", err)
		}
		again, err := ParseState(out)
		if err != nil || !reflect.DeepEqual(normalize(again), normalize(s)) {
			t.Fatalf("round trip of %s: %+v, %v; want %+v", out, again, err, s)
		}
	})
}

// normalize makes empty and nil slices alike (omitempty drops both).
func normalize(s State) State {
	if len(s.Warnings) == 0 {
		s.Warnings = nil
	}
	if s.Reset != nil && len(s.Reset.Kept) == 0 {
		r := *s.Reset
		r.Kept = nil
		s.Reset = &r
	}
	return s
}

// FuzzParseVersion: a version a device accepts has one spelling and one
// place in the order: what parses prints back as the same string, and
// Compare is a total order consistent with equality of that spelling.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1", "1.4.2", "2026.12.3", "01", "1..2", "18446744073709551615", "18446744073709551616", "1.2.3.4.5.6.7.8.9", "+1", "-1", " 1"} {
		f.Add(s, "1.10")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		va, errA := ParseVersion(a)
		vb, errB := ParseVersion(b)
		if errA != nil {
			return
		}
		if got := va.String(); got != a {
			t.Fatalf("ParseVersion(%q) prints as %q", a, got)
		}
		if strings.TrimSpace(a) != a || len(va) == 0 || len(va) > 8 {
			t.Fatalf("ParseVersion(%q) = %v", a, va)
		}
		if va.Compare(va) != 0 {
			t.Fatalf("%q differs from itself", a)
		}
		if errB == nil && va.Compare(vb) != -vb.Compare(va) {
			t.Fatalf("Compare(%q, %q) = %d, Compare(%q, %q) = %d", a, b, va.Compare(vb), b, a, vb.Compare(va))
		}
	})
}
