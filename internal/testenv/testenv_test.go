package testenv

import (
	"math"
	"strings"
	"testing"
)

func TestParseInt(t *testing.T) {
	for _, tc := range []struct {
		s       string
		min     int64
		want    int64
		wantErr string
	}{
		{s: "", min: 1, want: 10},
		{s: "3", min: 1, want: 3},
		{s: "-42", min: math.MinInt64, want: -42},
		{s: "1700000000123456789", min: math.MinInt64, want: 1700000000123456789},
		{s: "0", min: 1, wantErr: `OVROOT_X="0": want at least 1`},
		{s: "ten", min: 1, wantErr: `OVROOT_X="ten": want a whole number`},
		{s: "3 ", min: 1, wantErr: "want a whole number"},
		{s: "1e3", min: 1, wantErr: "want a whole number"},
	} {
		got, err := ParseInt("OVROOT_X", tc.s, 10, tc.min)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseInt(%q) = %d, %v; want error %q", tc.s, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseInt(%q) = %d, %v; want %d", tc.s, got, err, tc.want)
		}
	}
}
