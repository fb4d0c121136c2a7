package boot

import (
	"bytes"
	"fmt"
	"github.com/ovroot/ovroot/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func formatTarget(t *testing.T, size int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "data.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func probeFile(t *testing.T, f *os.File, size int64) Content {
	t.Helper()
	c, err := Probe(f, size)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func e2fsckClean(t *testing.T, path string) {
	t.Helper()
	if _, err := exec.LookPath("e2fsck"); err != nil {
		testenv.Missing(t, "e2fsck not installed (make deps)")
	}
	out, err := exec.Command("e2fsck", "-fn", path).CombinedOutput()
	if err != nil || regexp.MustCompile(`(?m)\? no$`).Match(out) {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
}

const formatSize = 200 << 20 // past 128 MiB: group 1 holds a backup superblock

// formatSizes are a small partition (1 KiB blocks, as mke2fs makes below
// 512 MiB) and a large one (4 KiB blocks).
var formatSizes = []struct {
	size      int64
	blockSize int64
}{{formatSize, 1024}, {640 << 20, 4096}}

func TestFormatExt4(t *testing.T) {
	for _, tc := range formatSizes {
		t.Run(fmt.Sprintf("%dMiB", tc.size>>20), func(t *testing.T) {
			f := formatTarget(t, tc.size)
			if err := makeExt4(f, tc.size, "rootfs_data"); err != nil {
				t.Fatal(err)
			}
			if c := probeFile(t, f, tc.size); c != ContentExt4 {
				t.Fatalf("after format: %s", c)
			}
			sb, err := readExt4Superblock(f, ext4SuperblockOffset)
			if err != nil {
				t.Fatal(err)
			}
			if bs := int64(1024) << sb.LogBlockSize; bs != tc.blockSize {
				t.Errorf("block size %d, want %d", bs, tc.blockSize)
			}
			if _, ok := findExt4Backup(f, tc.size); !ok {
				t.Error("no backup superblock where Probe looks for one")
			}
			e2fsckClean(t, f.Name())
		})
	}
}

// A power cut at any write of the format leaves a partition the next boot
// still takes for blank, and formats again.
func TestFormatExt4PowerCut(t *testing.T) {
	for _, tc := range formatSizes {
		size := tc.size
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			// Cut after 1, 2, 4, ... writes until a run completes, then at 16 more
			// points spread over the last doubling (the end of the format).
			var cuts []int
			total := 0
			for k := 1; total == 0; k *= 2 {
				f := formatTarget(t, size)
				if err := formatExt4(f, size, "rootfs_data", k); err == nil {
					total = k
				} else {
					cuts = append(cuts, k)
				}
			}
			for k := total / 2; k < total; k += max(1, total/32) {
				cuts = append(cuts, k)
			}
			for _, k := range cuts {
				f := formatTarget(t, size)
				err := formatExt4(f, size, "rootfs_data", k)
				if err == nil {
					continue // the format needs no more writes than this
				}
				if !strings.Contains(err.Error(), errPowerCut.Error()) {
					t.Fatalf("cut after %d writes: %v", k, err)
				}
				if c := probeFile(t, f, size); c != ContentBlank {
					t.Fatalf("cut after %d writes left %s, want blank", k, c)
				}
				if err := makeExt4(f, size, "rootfs_data"); err != nil {
					t.Fatal(err)
				}
				if c := probeFile(t, f, size); c != ContentExt4 {
					t.Fatalf("format after a cut: %s", c)
				}
				e2fsckClean(t, f.Name())
			}
			if total < 4 {
				t.Errorf("the format made only %d writes: the cuts tested nothing", total)
			}
			t.Logf("format: %d power cuts (after %v writes) each left a blank partition", len(cuts), cuts)

		})
	}
}

// TestFormatExt4OverGarbage formats a partition full of 0xff bytes (an
// old filesystem, random flash content): what the format zeroes with
// fallocate (inode tables, journal) must read back as zeros, or e2fsck
// finds garbage inodes.
func TestFormatExt4OverGarbage(t *testing.T) {
	const size = 64 << 20
	f := formatTarget(t, size)
	junk := bytes.Repeat([]byte{0xff}, 1<<20)
	for off := int64(0); off < size; off += int64(len(junk)) {
		if _, err := f.WriteAt(junk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := makeExt4(f, size, "rootfs_data"); err != nil {
		t.Fatal(err)
	}
	if c := probeFile(t, f, size); c != ContentExt4 {
		t.Fatalf("after format: %s", c)
	}
	e2fsckClean(t, f.Name())
}

// TestFormatExt4Sizes checks the format at sizes around the layout's edges:
// one flex group or several, 1 KiB and 4 KiB blocks, a last block group
// that is short (or too short to keep), e2fsck -fn clean each time.
func TestFormatExt4Sizes(t *testing.T) {
	for _, size := range []int64{
		17 << 20,                  // 3 groups, the last one short
		8<<20 + 100<<10,           // a last group too short to keep
		300<<20 + 12345<<10 + 512, // not a multiple of the block size
		511 << 20,                 // the largest with 1 KiB blocks: 64 groups, 4 flex groups
		4 << 30,                   // 4 KiB blocks, 32 groups
		5<<30 + 3<<20,             // a short last group with 4 KiB blocks
	} {
		t.Run(fmt.Sprintf("%dKiB", size>>10), func(t *testing.T) {
			f := formatTarget(t, size)
			if err := makeExt4(f, size, "rootfs_data"); err != nil {
				t.Fatal(err)
			}
			if c := probeFile(t, f, size); c != ContentExt4 {
				t.Fatalf("after format: %s", c)
			}
			e2fsckClean(t, f.Name())
		})
	}
}

// countingWriter counts the bytes written through it.
type countingWriter struct{ n int64 }

func (c *countingWriter) WriteAt(p []byte, off int64) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// The format writes metadata only (the inode tables are left to the
// kernel's lazy init): a few KiB per block group, whatever their inode
// tables hold. The journal is zeroed through the zero function, not written.
func TestFormatExt4WritesLittle(t *testing.T) {
	for _, size := range []int64{256 << 20, 4 << 30, 64 << 30} {
		var w countingWriter
		var zeroed int64
		zero := func(off, n int64) error { zeroed += n; return nil }
		if err := mkfsExt4(&w, zero, size, "x", time.Now()); err != nil {
			t.Fatal(err)
		}
		g, err := ext4Geometry(size)
		if err != nil {
			t.Fatal(err)
		}
		if limit := int64(g.groups)*int64(g.bs)*3 + 64<<10; w.n > limit {
			t.Errorf("%d MiB: wrote %d bytes, want at most %d (3 blocks a group, 64 KiB more)", size>>20, w.n, limit)
		}
		if zeroed != int64(g.jblocks*g.bs) {
			t.Errorf("%d MiB: zeroed %d bytes, want the journal's %d", size>>20, zeroed, g.jblocks*g.bs)
		}
	}
}

// The kernel grows the data partition online; a filesystem without a
// resize inode is grown there by converting it to meta_bg. resize2fs (the
// offline path on the host) must grow the format 4x and leave it clean.
func TestFormatExt4Grows(t *testing.T) {
	if _, err := exec.LookPath("resize2fs"); err != nil {
		testenv.Missing(t, "resize2fs not installed (make deps)")
	}
	for _, size := range []int64{200 << 20, 640 << 20} {
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			f := formatTarget(t, size)
			if err := makeExt4(f, size, "rootfs_data"); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(4 * size); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("resize2fs", f.Name()).CombinedOutput(); err != nil {
				t.Fatalf("resize2fs: %v\n%s", err, out)
			}
			e2fsckClean(t, f.Name())
			sb, err := readExt4Superblock(f, ext4SuperblockOffset)
			if err != nil {
				t.Fatal(err)
			}
			if got := int64(sb.BlocksCountLo) << (10 + sb.LogBlockSize); got != 4*size {
				t.Errorf("after resize2fs: %d bytes, want %d", got, 4*size)
			}
		})
	}
}

func TestFormatExt4TooSmall(t *testing.T) {
	for _, size := range []int64{0, 1 << 20} {
		f := formatTarget(t, max(size, 1))
		if err := makeExt4(f, size, "rootfs_data"); err == nil || !strings.Contains(err.Error(), "too small") {
			t.Errorf("%d bytes: %v, want too small", size, err)
		}
	}
}
