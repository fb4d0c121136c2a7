package boot

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// memDisk is a Disk in memory. It records every write and flush, and the
// partition sizes the "kernel" knows.
type memDisk struct {
	data    []byte
	ss      int
	log     []memOp
	kernel  map[int]int64 // partition number -> size in bytes
	resized []string
	reread  int
}

type memOp struct {
	flush bool
	off   int64
	data  []byte
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, fmt.Errorf("read %d bytes at %d: outside the disk", len(p), off)
	}
	return copy(p, m.data[off:]), nil
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, fmt.Errorf("write %d bytes at %d: outside the disk", len(p), off)
	}
	m.log = append(m.log, memOp{off: off, data: append([]byte(nil), p...)})
	return copy(m.data[off:], p), nil
}

func (m *memDisk) Size() int64     { return int64(len(m.data)) }
func (m *memDisk) SectorSize() int { return m.ss }
func (m *memDisk) Flush() error    { m.log = append(m.log, memOp{flush: true}); return nil }
func (m *memDisk) Close() error    { return nil }
func (m *memDisk) Reread() error   { m.reread++; return nil }
func (m *memDisk) PartitionSize(n int) (int64, error) {
	if s, ok := m.kernel[n]; ok {
		return s, nil
	}
	return 0, os.ErrNotExist
}
func (m *memDisk) ResizePartition(n int, start, length int64) error {
	m.resized = append(m.resized, fmt.Sprintf("%d %d %d", n, start, length))
	m.kernel[n] = length
	return nil
}

func (m *memDisk) writes() int {
	n := 0
	for _, op := range m.log {
		if !op.flush {
			n++
		}
	}
	return n
}

const (
	mib       = int64(1 << 20)
	imageSize = 16 * mib
)

// imageLayout is the image's partitions (as ovroot build lays them out:
// 1 MiB aligned, the data partition last, up to the end of the usable
// range rounded down to 1 MiB).
var imageLayout = [][2]int64{{1 * mib, 4 * mib}, {5 * mib, 3 * mib}, {8 * mib, imageSize - 9*mib}}

// imageDisk is a disk of size bytes holding an image of imageSize whose GPT
// go-diskfs wrote (as ovroot build does), the rest zeros. The kernel knows
// the image's partition sizes.
func imageDisk(t *testing.T, size int64) *memDisk {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	d, err := diskfs.Create(p, imageSize, diskfs.SectorSize512)
	if err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: "5b2a9c3e-1111-4f00-8000-000000000000"}
	labels := []string{"boot", "rootfs", "rootfs_data"}
	for i, l := range imageLayout {
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1, Start: uint64(l[0] / 512), End: uint64((l[0]+l[1])/512 - 1),
			Type: gpt.LinuxFilesystem, Name: labels[i], GUID: fmt.Sprintf("5b2a9c3e-2222-4f00-8000-00000000000%d", i+1),
		})
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	d.Close()
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	m := &memDisk{data: make([]byte, size), ss: 512, kernel: map[int]int64{}}
	copy(m.data, img)
	for i, l := range imageLayout {
		m.kernel[i+1] = l[1]
	}
	return m
}

// readWithDiskfs reads the disk's GPT with go-diskfs, a reader that is not
// ours, and checks the backup is where the primary says.
func readWithDiskfs(t *testing.T, m *memDisk) *gpt.Table {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(p, m.data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tb, err := gpt.Read(file.New(f, true), 512, 512)
	if err != nil {
		t.Fatalf("go-diskfs cannot read the GPT: %v", err)
	}
	if err := tb.Verify(file.New(f, true), uint64(len(m.data))); err != nil {
		t.Errorf("go-diskfs Verify: %v", err)
	}
	return tb
}

// wantEnd is where the grown data partition must end on a disk of size: the
// last 1 MiB boundary before the backup's 32 sectors of entries and header.
func wantEnd(size int64) uint64 {
	usableEnd := size - 33*512 // first byte of the backup entries
	return uint64(usableEnd/mib*mib/512 - 1)
}

func TestGrowGPT(t *testing.T) {
	for _, tc := range []struct {
		name       string
		size       int64
		grow       bool
		part       int
		prepare    func(m *memDisk) // after imageDisk
		wantErr    string
		wantWrites bool
		wantEnd    uint64 // of partition 3; 0 = unchanged
	}{
		{name: "same size does nothing", size: imageSize, grow: true, part: 3},
		{name: "4x grows to the end, 1 MiB aligned", size: 4 * imageSize, grow: true, part: 3, wantWrites: true, wantEnd: wantEnd(4 * imageSize)},
		{name: "odd size rounds the end down to 1 MiB", size: 4*imageSize + 7*512 + 300*1024, grow: true, part: 3, wantWrites: true, wantEnd: wantEnd(4*imageSize + 7*512 + 300*1024)},
		{name: "grow off moves only the backup", size: 4 * imageSize, grow: false, part: 3, wantWrites: true},
		{name: "not the last partition is not grown", size: 4 * imageSize, grow: true, part: 2, wantWrites: true},
		{name: "smaller disk is refused untouched", size: imageSize - mib, grow: true, part: 3, wantErr: "smaller disk"},
		{name: "100 sectors more reach the next 1 MiB boundary", size: imageSize + 100*512, grow: true, part: 3, wantWrites: true, wantEnd: wantEnd(imageSize + 100*512)},
		{name: "10 sectors more move the backup only", size: imageSize + 10*512, grow: true, part: 3, wantWrites: true},
		{
			name: "not a GPT disk does nothing", size: 4 * imageSize, grow: true, part: 3,
			prepare: func(m *memDisk) { clear(m.data) },
		},
		{
			name: "valid primary with a broken backup rewrites the backup", size: imageSize, grow: true, part: 3, wantWrites: true,
			prepare: func(m *memDisk) { m.data[len(m.data)-512+20] ^= 0xff },
		},
		{
			// Valid, but a stale copy: a later repair of the primary
			// from it would move partition 1.
			name: "a valid backup that disagrees with the primary is rewritten from it", size: imageSize, grow: true, part: 3, wantWrites: true,
			prepare: func(m *memDisk) {
				last := int64(len(m.data)/512 - 1)
				m.data[(last-32)*512+32] ^= 1 // backup entry 1's first LBA
				fixGPTCRCs(m.data, last)
				if g := readDiskGPT(m, uint64(last+1), 512); g.BackupErr != nil || bytes.Equal(g.Backup.Entries, g.Primary.Entries) {
					panic(fmt.Sprintf("the stale backup is not valid or not stale: %v", g.BackupErr))
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := imageDisk(t, tc.size)
			if tc.prepare != nil {
				tc.prepare(m)
			}
			before := append([]byte(nil), m.data...)
			res, err := growGPT(m, tc.part, tc.grow, t.Logf)
			if stale := strings.HasPrefix(tc.name, "a valid backup that disagrees"); res.StaleBackup != stale {
				t.Errorf("StaleBackup = %v", res.StaleBackup)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("growGPT() error = %v, want one containing %q", err, tc.wantErr)
				}
				if !bytes.Equal(m.data, before) {
					t.Error("the disk was written")
				}
				return
			}
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("growGPT() = %v", err)
			}
			if got := m.writes() > 0; got != tc.wantWrites {
				t.Fatalf("wrote %d times, want writes %v", m.writes(), tc.wantWrites)
			}
			if tc.prepare != nil && tc.name == "not a GPT disk does nothing" {
				return
			}
			tb := readWithDiskfs(t, m)
			end := uint64((imageLayout[2][0]+imageLayout[2][1])/512 - 1)
			if tc.wantEnd != 0 {
				end = tc.wantEnd
			}
			if got := tb.Partitions[2].End; got != end {
				t.Errorf("data partition ends at LBA %d, want %d", got, end)
			}
			if (end+1)*512%uint64(mib) != 0 {
				t.Errorf("end %d is not 1 MiB aligned", end)
			}
			for i := 0; i < 2; i++ {
				if tb.Partitions[i].Start != uint64(imageLayout[i][0]/512) || tb.Partitions[i].End != uint64((imageLayout[i][0]+imageLayout[i][1])/512-1) {
					t.Errorf("partition %d changed: %+v", i+1, tb.Partitions[i])
				}
			}
			if want := int64(end+1)*512 - imageLayout[2][0]; m.kernel[3] != want {
				t.Errorf("the kernel knows partition 3 as %d bytes, want %d (resizes %q)", m.kernel[3], want, m.resized)
			}
			if cur, want, ok := pmbrSize(m.data[:512], uint64(tc.size/512)); !ok || cur != want {
				t.Errorf("protective MBR size %d, want %d (ok %v)", cur, want, ok)
			}
			// Done is done: a second run writes nothing.
			m.log = nil
			if _, err := growGPT(m, tc.part, tc.grow, t.Logf); err != nil || m.writes() != 0 {
				t.Errorf("second growGPT() = %v after %d writes, want nil and none", err, m.writes())
			}
		})
	}
}

// TestGrowGPTPowerCut cuts the power at every flush of a grow, with the
// writes issued since the last flush landed in every combination (whole
// writes) and in random sector subsets (torn writes), and boots each state:
// the kernel must find the partitions (after the init's repair of the
// primary when it is not valid), with the data partition at its old or its
// new size and the others unchanged, and the next growGPT must finish the
// job exactly as an uninterrupted one.
func TestGrowGPTPowerCut(t *testing.T) {
	const size = 4 * imageSize
	start := imageDisk(t, size)
	base := append([]byte(nil), start.data...)
	if _, err := growGPT(start, 3, true, t.Logf); err != nil {
		t.Fatal(err)
	}
	final := start.data
	log := start.log
	rng := rand.New(rand.NewSource(1))
	states := 0
	var flushes []int // index of each flush in log
	for i, op := range log {
		if op.flush {
			flushes = append(flushes, i)
		}
	}
	if len(flushes) < 2 {
		t.Fatalf("the grow flushed %d times, want the backup and the primary flushed apart", len(flushes))
	}
	check := func(disk []byte, what string) {
		t.Helper()
		states++
		m := &memDisk{data: disk, ss: 512, kernel: map[int]int64{1: imageLayout[0][1], 2: imageLayout[1][1], 3: imageLayout[2][1]}}
		sectors := uint64(size / 512)
		// The kernel reads the primary only (no "gpt" on the cmdline).
		p, err := readGPT(m, 1, sectors, 512)
		if err != nil {
			wrote, rerr := gptRepairPrimary(m, readDiskGPT(m, sectors, 512), t.Logf)
			if rerr != nil || !wrote {
				t.Fatalf("%s: primary not valid (%v) and the repair = %v, %v", what, err, wrote, rerr)
			}
			if p, err = readGPT(m, 1, sectors, 512); err != nil {
				t.Fatalf("%s: primary after the repair: %v", what, err)
			}
		}
		for i, l := range imageLayout {
			e := p.entry(i)
			if e.FirstLBA != uint64(l[0]/512) {
				t.Fatalf("%s: partition %d starts at %d", what, i+1, e.FirstLBA)
			}
			old := uint64((l[0]+l[1])/512 - 1)
			if e.LastLBA != old && !(i == 2 && e.LastLBA == wantEnd(size)) {
				t.Fatalf("%s: partition %d ends at %d (old %d, grown %d)", what, i+1, e.LastLBA, old, wantEnd(size))
			}
		}
		if _, err := growGPT(m, 3, true, t.Logf); err != nil {
			t.Fatalf("%s: the next boot's growGPT: %v", what, err)
		}
		if !bytes.Equal(m.data, final) {
			t.Fatalf("%s: after the next boot the disk differs from an uninterrupted grow", what)
		}
	}
	replay := func(upto int) []byte {
		d := append([]byte(nil), base...)
		for _, op := range log[:upto] {
			if !op.flush {
				copy(d[op.off:], op.data)
			}
		}
		return d
	}
	prev := 0
	for _, fl := range append([]int{-1}, flushes...) {
		durable := 0
		if fl >= 0 {
			durable = fl + 1
		}
		_ = prev
		// The writes after this flush, up to the next one.
		var pending []memOp
		for _, op := range log[durable:] {
			if op.flush {
				break
			}
			pending = append(pending, op)
		}
		for mask := 0; mask < 1<<len(pending); mask++ {
			d := replay(durable)
			for j, op := range pending {
				if mask&(1<<j) != 0 {
					copy(d[op.off:], op.data)
				}
			}
			check(d, fmt.Sprintf("after flush %d, pending writes mask %b", fl, mask))
		}
		for r := 0; r < 20 && len(pending) > 0; r++ {
			d := replay(durable)
			for _, op := range pending {
				for s := 0; s < len(op.data); s += 512 {
					if rng.Intn(2) == 0 {
						copy(d[op.off+int64(s):], op.data[s:s+512])
					}
				}
			}
			check(d, fmt.Sprintf("after flush %d, torn subset %d", fl, r))
		}
		prev = durable
	}
	t.Logf("%d crash states after %d writes and %d flushes: each booted and finished the grow", states, len(log)-len(flushes), len(flushes))
}

func TestRepairPrimaryDecision(t *testing.T) {
	sectors := uint64(imageSize / 512)
	for _, tc := range []struct {
		name      string
		corrupt   func(d []byte)
		wantWrite bool
		wantErr   bool
	}{
		{name: "valid primary: nothing", corrupt: func(d []byte) {}},
		{name: "corrupt primary header, valid backup: repaired", corrupt: func(d []byte) { d[512+30] ^= 1 }, wantWrite: true},
		{name: "corrupt primary entries, valid backup: repaired", corrupt: func(d []byte) { d[1024+100] ^= 1 }, wantWrite: true},
		{name: "both corrupt: error, untouched", corrupt: func(d []byte) { d[512+30] ^= 1; d[len(d)-512+30] ^= 1 }, wantErr: true},
		{name: "no GPT at all: nothing", corrupt: func(d []byte) { clear(d) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := imageDisk(t, imageSize)
			tc.corrupt(m.data)
			wrote, err := gptRepairPrimary(m, readDiskGPT(m, sectors, 512), t.Logf)
			if wrote != tc.wantWrite || (err != nil) != tc.wantErr {
				t.Fatalf("gptRepairPrimary() = %v, %v; want %v, error %v", wrote, err, tc.wantWrite, tc.wantErr)
			}
			if (m.writes() > 0) != tc.wantWrite {
				t.Errorf("%d writes", m.writes())
			}
			if wrote {
				readWithDiskfs(t, m)
				if len(m.log) == 0 || !m.log[len(m.log)-1].flush {
					t.Error("the repair did not flush")
				}
			}
		})
	}
}
