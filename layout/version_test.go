package layout

import "testing"

func TestVersionOrder(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1", "2", -1}, {"2", "10", -1}, {"1.2", "1.2.0", 0}, {"1.2", "1.10", -1},
		{"1.2.3", "1.2", 1}, {"2026.12.3", "2026.11.30", 1}, {"0", "0.0.0", 0},
		{"18446744073709551615", "1", 1},
	} {
		got, err := CompareVersions(c.a, c.b)
		if err != nil || got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
		if back, _ := CompareVersions(c.b, c.a); back != -c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.b, c.a, back, -c.want)
		}
	}
	for _, bad := range []string{"", "v1", "1.", ".1", "1..2", "1.2-rc1", "01", "1.02", "+1", "-1", " 1", "1 ", "1.2.3.4.5.6.7.8.9", "18446744073709551616", "１"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
}
