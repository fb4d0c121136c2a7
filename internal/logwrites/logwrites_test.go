package logwrites

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// rec is one entry of a synthetic log: a write of data at sector (data
// nil for a flush or discard of n sectors).
type rec struct {
	sector, n uint64
	flags     uint64
	data      []byte
}

// build writes a log as QEMU's blklogwrites does: super block in sector 0
// declaring `declared` entries, each entry a header sector then its data.
func build(ss int, declared int, recs []rec) []byte {
	var b bytes.Buffer
	sector := func(p []byte) {
		s := make([]byte, (len(p)+ss-1)/ss*ss)
		copy(s, p)
		b.Write(s)
	}
	sb := make([]byte, superSize)
	binary.LittleEndian.PutUint64(sb[0:], Magic)
	binary.LittleEndian.PutUint64(sb[8:], Version)
	binary.LittleEndian.PutUint64(sb[16:], uint64(declared))
	binary.LittleEndian.PutUint32(sb[24:], uint32(ss))
	sector(sb)
	for _, r := range recs {
		h := make([]byte, entrySize)
		binary.LittleEndian.PutUint64(h[0:], r.sector)
		binary.LittleEndian.PutUint64(h[8:], r.n)
		binary.LittleEndian.PutUint64(h[16:], r.flags)
		sector(h)
		if r.data != nil {
			sector(r.data)
		}
	}
	return b.Bytes()
}

// mem is a device in memory.
type mem []byte

func (m mem) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

func fill(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

// sample: A at sector 0, B at sectors 2-3, flush; C over A, discard of B's
// first sector, flush; then (not declared: the recording was killed) D at
// sector 1 and E at sector 3, no flush.
func sample(ss int) []byte {
	return build(ss, 6, []rec{
		{sector: 0, n: 1, data: fill('A', ss)},
		{sector: 2, n: 2, data: fill('B', 2*ss)},
		{flags: FlagFlush},
		{sector: 0, n: 1, data: fill('C', ss)},
		{sector: 2, n: 1, flags: FlagDiscard},
		{flags: FlagFlush},
		{sector: 1, n: 1, data: fill('D', ss)},
		{sector: 3, n: 1, data: fill('E', ss)},
	})
}

func TestRead(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		log := sample(ss)
		// Zeroes after the last entry, as a log file QEMU was still growing.
		log = append(log, make([]byte, 3*ss)...)
		l, err := Read(bytes.NewReader(log), int64(len(log)))
		if err != nil {
			t.Fatalf("sector size %d: %v", ss, err)
		}
		var got []string
		for _, e := range l.Entries {
			got = append(got, e.String())
		}
		s := int64(ss)
		want := []string{
			Entry{Offset: 0, Length: s}.String(), Entry{Offset: 2 * s, Length: 2 * s}.String(), "flush 0+0",
			Entry{Offset: 0, Length: s}.String(), Entry{Offset: 2 * s, Length: s, Flags: FlagDiscard}.String(), "flush 0+0",
			Entry{Offset: s, Length: s}.String(), Entry{Offset: 3 * s, Length: s}.String(),
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("sector size %d: entries\n%q\nwant\n%q", ss, got, want)
		}
		if l.Declared != 6 || l.SectorSize != s {
			t.Errorf("sector size %d: declared %d, sector size %d", ss, l.Declared, l.SectorSize)
		}
		if got, want := l.Boundaries(), []int{0, 3, 6}; !reflect.DeepEqual(got, want) {
			t.Errorf("Boundaries() = %v, want %v", got, want)
		}
		for b, want := range map[int][]int{0: {0, 1}, 3: {3, 4}, 6: {6, 7}} {
			if got := l.Pending(b); !reflect.DeepEqual(got, want) {
				t.Errorf("Pending(%d) = %v, want %v", b, got, want)
			}
		}
	}
}

func TestReplayCut(t *testing.T) {
	const ss = 512
	log := sample(ss)
	l, err := Read(bytes.NewReader(log), int64(len(log)))
	if err != nil {
		t.Fatal(err)
	}
	// Each sector of the 4-sector device as one letter ('.' untouched,
	// '0' zeroed).
	show := func(dev mem) string {
		var s strings.Builder
		for i := 0; i < len(dev); i += ss {
			switch c := dev[i]; c {
			case 0:
				s.WriteByte('0')
			default:
				s.WriteByte(c)
			}
		}
		return s.String()
	}
	for _, tc := range []struct {
		cut  Cut
		want string
	}{
		{Cut{Boundary: 0}, "...."},
		{Cut{Boundary: 0, Apply: []int{1}}, "..BB"},
		{Cut{Boundary: 0, Apply: []int{0, 1}}, "A.BB"},
		{Cut{Boundary: 3}, "A.BB"},
		{Cut{Boundary: 3, Apply: []int{4}}, "A.0B"},
		{Cut{Boundary: 6}, "C.0B"},
		{Cut{Boundary: 6, Apply: []int{7}}, "C.0E"},
		{Cut{Boundary: 6, Apply: []int{6, 7}}, "CD0E"},
	} {
		dev := mem(fill('.', 4*ss))
		if err := l.ReplayCut(dev, tc.cut); err != nil {
			t.Fatalf("ReplayCut(%v): %v", tc.cut, err)
		}
		if got := show(dev); got != tc.want {
			t.Errorf("ReplayCut(%v) = %s, want %s", tc.cut, got, tc.want)
		}
	}
	if err := l.ApplyTail(mem(make([]byte, 4*ss)), Cut{Boundary: 3, Apply: []int{1}}); err == nil {
		t.Errorf("ApplyTail with an entry before the boundary: no error")
	}
}

func TestCuts(t *testing.T) {
	const ss = 512
	var recs []rec
	for i := 0; i < 6; i++ {
		recs = append(recs, rec{sector: uint64(i), n: 1, data: fill(byte('a'+i), ss)})
	}
	recs[2].flags = FlagFUA
	recs = append(recs, rec{flags: FlagFlush}, rec{sector: 9, n: 1, data: fill('z', ss)})
	log := build(ss, len(recs), recs)
	l, err := Read(bytes.NewReader(log), int64(len(log)))
	if err != nil {
		t.Fatal(err)
	}
	cuts := l.Cuts(0, 5, rand.New(rand.NewSource(1)))
	if len(cuts) != 7 {
		t.Fatalf("Cuts(0, 5) = %d cuts, want none + all + 5 subsets", len(cuts))
	}
	if !reflect.DeepEqual(cuts[0].Apply, []int{2}) || cuts[0].Kind != "none" {
		t.Errorf("none = %+v, want only the FUA write 2", cuts[0])
	}
	if !reflect.DeepEqual(cuts[1].Apply, []int{0, 1, 2, 3, 4, 5}) || cuts[1].Kind != "all" {
		t.Errorf("all = %+v", cuts[1])
	}
	distinct := map[string]bool{}
	for _, c := range cuts[2:] {
		if c.Kind != "subset" {
			t.Errorf("cut %+v: kind %q", c, c.Kind)
		}
		fua := false
		for _, i := range c.Apply {
			fua = fua || i == 2
		}
		if !fua {
			t.Errorf("subset %v drops the FUA write", c.Apply)
		}
		distinct[fmt.Sprint(c.Apply)] = true
	}
	if len(distinct) < 2 {
		t.Errorf("5 random subsets of 5 writes gave %d distinct subsets", len(distinct))
	}
	// The same seed gives the same subsets (a campaign can be replayed).
	again := l.Cuts(0, 5, rand.New(rand.NewSource(1)))
	if !reflect.DeepEqual(cuts, again) {
		t.Errorf("same seed, different cuts:\n%v\n%v", cuts, again)
	}
	// One pending write: none and all are the only states.
	if got := l.Cuts(7, 5, rand.New(rand.NewSource(1))); len(got) != 2 {
		t.Errorf("Cuts(7) = %v, want none and all", got)
	}
}

func TestReadErrors(t *testing.T) {
	good := sample(512)
	for _, tc := range []struct {
		name, want string
		log        []byte
	}{
		{"never flushed", "never flushed", append(make([]byte, 512), good[512:]...)},
		{"not a log", "magic 0x1", append([]byte{1}, make([]byte, 1023)...)},
		{"wrong version", "version 2", func() []byte {
			b := append([]byte(nil), good...)
			binary.LittleEndian.PutUint64(b[8:], 2)
			return b
		}()},
		{"bad sector size", "sector size 1000", func() []byte {
			b := append([]byte(nil), good...)
			binary.LittleEndian.PutUint32(b[24:], 1000)
			return b
		}()},
		{"declared entry cut short", "entry 5 of 6", good[:512*10+100]},
		{"declared entry with bad flags", "flags 0x10", build(512, 1, []rec{{sector: 1, n: 1, flags: 0x10, data: fill('x', 512)}})},
		{"too short for a super block", "super block", good[:10]},
	} {
		_, err := Read(bytes.NewReader(tc.log), int64(len(tc.log)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Read() error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// An undeclared tail cut short ends the log without an error.
	short := good[:len(good)-100]
	l, err := Read(bytes.NewReader(short), int64(len(short)))
	if err != nil || len(l.Entries) != 7 {
		t.Errorf("undeclared tail cut short: %v, %d entries, want 7 and no error", err, len(l.Entries))
	}
}

func TestSection(t *testing.T) {
	dev := mem(fill('.', 8))
	s := &Section{W: dev, Start: 100, Size: 8}
	for _, w := range []struct {
		off int64
		p   string
	}{{96, "aaaaaa"}, {104, "bb"}, {106, "cccccc"}, {0, "zz"}, {200, "zz"}} {
		if n, err := s.WriteAt([]byte(w.p), w.off); err != nil || n != len(w.p) {
			t.Fatalf("WriteAt(%q, %d) = %d, %v", w.p, w.off, n, err)
		}
	}
	if got := string(dev); got != "aa..bbcc" {
		t.Errorf("section = %q, want %q", got, "aa..bbcc")
	}
	if s.Outside != 4 {
		t.Errorf("Outside = %d, want 4 (two straddling, two outside)", s.Outside)
	}
}
