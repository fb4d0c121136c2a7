package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count. In TOML it is a string with a binary unit
// ("64MiB", "1GiB", "512KiB"; "K", "M", "G", "T" alone also mean powers of
// 1024) or a plain number of bytes ("4096" or 4096).
type Size int64

var sizeUnits = []struct {
	suffixes []string
	mult     int64
}{
	{[]string{"TiB", "T"}, 1 << 40},
	{[]string{"GiB", "G"}, 1 << 30},
	{[]string{"MiB", "M"}, 1 << 20},
	{[]string{"KiB", "K"}, 1 << 10},
	{[]string{"B", ""}, 1},
}

// ParseSize reads a Size.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	for _, u := range sizeUnits {
		for _, suf := range u.suffixes {
			if !strings.HasSuffix(t, suf) {
				continue
			}
			num := strings.TrimSpace(strings.TrimSuffix(t, suf))
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || num == "" {
				continue
			}
			if n < 0 {
				return 0, fmt.Errorf("size %q is negative", s)
			}
			if n > math.MaxInt64/u.mult {
				return 0, fmt.Errorf("size %q is too large", s)
			}
			return Size(n * u.mult), nil
		}
	}
	return 0, fmt.Errorf("invalid size %q (want e.g. 256MiB, 1GiB or a number of bytes)", s)
}

// String is the shortest exact form, e.g. "64MiB".
func (s Size) String() string {
	for _, u := range sizeUnits {
		if u.mult > 1 && s != 0 && int64(s)%u.mult == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.mult, u.suffixes[0])
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Duration is a time.Duration written as a Go duration string ("15s").
type Duration time.Duration

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 15s or 500ms)", string(b))
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", string(b))
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// OffDuration is a duration that may be turned off: "off" (or "0") is 0.
type OffDuration Duration

// D is the duration; 0 = off.
func (d OffDuration) D() time.Duration { return time.Duration(d) }

func (d OffDuration) String() string {
	if d == 0 {
		return "off"
	}
	return time.Duration(d).String()
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *OffDuration) UnmarshalText(b []byte) error {
	if s := string(b); s == "off" || s == "0" {
		*d = 0
		return nil
	}
	var v Duration
	if err := v.UnmarshalText(b); err != nil {
		return fmt.Errorf("%v, or \"off\"", err)
	}
	*d = OffDuration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d OffDuration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
