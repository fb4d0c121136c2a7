package layout

import (
	"fmt"
	"strconv"
	"strings"
)

// A release version orders releases: one to eight numbers separated by
// dots ("7", "1.4.2", "2026.12.3"), compared number by number from the
// left, a missing number counting as 0 ("1.2" = "1.2.0" < "1.10").
// Nothing else (no "v", no "-rc1"): the order must be one nobody can read
// two ways on a device that refuses downgrades.
type Version []uint64

// ParseVersion reads a release version.
func ParseVersion(s string) (Version, error) {
	if s == "" {
		return nil, fmt.Errorf("empty version")
	}
	parts := strings.Split(s, ".")
	if len(parts) > 8 {
		return nil, fmt.Errorf("version %q has more than 8 numbers", s)
	}
	v := make(Version, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil || p == "" || (len(p) > 1 && p[0] == '0') || p[0] == '+' {
			return nil, fmt.Errorf("version %q: %q is not a number (a version is numbers separated by dots, e.g. 3 or 1.4.2, no leading zeros)", s, p)
		}
		v[i] = n
	}
	return v, nil
}

// Compare is -1, 0 or +1 as v is older than, the same as or newer than w.
func (v Version) Compare(w Version) int {
	for i := 0; i < len(v) || i < len(w); i++ {
		var a, b uint64
		if i < len(v) {
			a = v[i]
		}
		if i < len(w) {
			b = w[i]
		}
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
	}
	return 0
}

// CompareVersions compares two version strings that ParseVersion accepts.
func CompareVersions(a, b string) (int, error) {
	va, err := ParseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := ParseVersion(b)
	if err != nil {
		return 0, err
	}
	return va.Compare(vb), nil
}

// String is the version as ParseVersion reads it.
func (v Version) String() string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.FormatUint(n, 10)
	}
	return strings.Join(parts, ".")
}
