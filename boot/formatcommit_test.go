package boot

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/ovroot/ovroot/internal/testenv"
)

// commitOp is one write or sync of the format's commit, recorded.
type commitOp struct {
	sync bool
	off  int64
	data []byte
}

// commitRecorder records the commit's writes without applying them.
type commitRecorder struct{ ops []commitOp }

func (r *commitRecorder) WriteAt(p []byte, off int64) (int, error) {
	r.ops = append(r.ops, commitOp{off: off, data: append([]byte(nil), p...)})
	return len(p), nil
}
func (r *commitRecorder) Sync() error { r.ops = append(r.ops, commitOp{sync: true}); return nil }

// TestFormatCommitPowerCut cuts the power inside the first-boot format's
// commit: the filesystem is on the disk and synced, then the held-back
// head (primary superblock, descriptors) and the backup superblocks'
// magics are written. After a cut the disk holds every write before the
// last sync and any subset of the writes since (a disk cache writes back in
// any order), each write whole or, for the head, in any of its 128 KiB
// requests. Each such state must probe as blank (the next boot formats
// again) or as an ext4 that e2fsck -fn finds clean, never as damaged or
// unknown: either would leave the device without its data partition.
func TestFormatCommitPowerCut(t *testing.T) {
	haveFsck := true
	if _, err := exec.LookPath("e2fsck"); err != nil {
		if os.Getenv("OVROOT_REQUIRE_TOOLS") == "1" {
			testenv.Missing(t, "e2fsck not installed (make deps)")
		}
		haveFsck = false
	}
	for _, tc := range formatSizes {
		t.Run(fmt.Sprintf("%dMiB", tc.size>>20), func(t *testing.T) {
			size := tc.size
			f := formatTarget(t, size)
			d, err := newDeferred(f, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := mkfsExt4(d, d.zero, size, "rootfs_data", time.Unix(1700000000, 0)); err != nil {
				t.Fatal(err)
			}
			rec := &commitRecorder{}
			d.out = rec
			if err := d.commit(); err != nil {
				t.Fatal(err)
			}
			// Epochs: the writes between two syncs.
			var epochs [][]commitOp
			var cur []commitOp
			for _, op := range rec.ops {
				if op.sync {
					epochs = append(epochs, cur)
					cur = nil
					continue
				}
				// The head goes to the disk as several requests, each of
				// which may land or not.
				for len(op.data) > 128<<10 {
					cur = append(cur, commitOp{off: op.off, data: op.data[:128<<10]})
					op = commitOp{off: op.off + 128<<10, data: op.data[128<<10:]}
				}
				cur = append(cur, op)
			}
			if len(cur) > 0 {
				t.Fatalf("the commit ends with %d writes after its last sync", len(cur))
			}
			rng := rand.New(rand.NewSource(1))
			states, bad := 0, 0
			var landed []commitOp // every write of the epochs before
			for ei, ep := range epochs {
				for _, subset := range writeSubsets(len(ep), rng) {
					ops := append([]commitOp(nil), landed...)
					for _, i := range subset {
						ops = append(ops, ep[i])
					}
					states++
					name := fmt.Sprintf("epoch %d, writes %v of %d", ei, subset, len(ep))
					if msg := checkCommitState(t, f, size, ops, haveFsck); msg != "" {
						bad++
						if bad <= 5 {
							t.Errorf("cut in %s: %s", name, msg)
						}
					}
				}
				landed = append(landed, ep...)
			}
			if bad > 5 {
				t.Errorf("... %d of %d cut states in all", bad, states)
			}
			t.Logf("%d cut states inside the commit (%d epochs)", states, len(epochs))
			if states < 10 {
				t.Errorf("only %d cut states: the recorder missed the commit's writes", states)
			}
		})
	}
}

// writeSubsets are the subsets of n writes a test tries: none, all, every
// prefix and suffix, every one alone and every one left out, and 16 seeded
// random ones.
func writeSubsets(n int, rng *rand.Rand) [][]int {
	seen := map[string]bool{}
	var out [][]int
	add := func(s []int) {
		k := fmt.Sprint(s)
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	rangeOf := func(from, to int) []int {
		s := []int{}
		for i := from; i < to; i++ {
			s = append(s, i)
		}
		return s
	}
	for k := 0; k <= n; k++ {
		add(rangeOf(0, k))
		add(rangeOf(k, n))
	}
	for i := 0; i < n; i++ {
		add([]int{i})
		add(append(rangeOf(0, i), rangeOf(i+1, n)...))
	}
	for r := 0; r < 16 && n > 2; r++ {
		s := []int{}
		for i := 0; i < n; i++ {
			if rng.Intn(2) == 0 {
				s = append(s, i)
			}
		}
		add(s)
	}
	return out
}

// checkCommitState applies ops to f, judges the result and undoes them.
func checkCommitState(t *testing.T, f *os.File, size int64, ops []commitOp, fsck bool) string {
	t.Helper()
	saved := make([][]byte, len(ops))
	for i, op := range ops {
		saved[i] = make([]byte, len(op.data))
		if _, err := f.ReadAt(saved[i], op.off); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range ops {
		if _, err := f.WriteAt(op.data, op.off); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for i := len(ops) - 1; i >= 0; i-- {
			if _, err := f.WriteAt(saved[i], ops[i].off); err != nil {
				t.Fatal(err)
			}
		}
	}()
	c, err := Probe(f, size)
	if err != nil {
		return err.Error()
	}
	switch c {
	case ContentBlank:
		return ""
	case ContentExt4:
		if !fsck {
			return ""
		}
		out, err := exec.Command("e2fsck", "-fn", f.Name()).CombinedOutput()
		if err != nil || regexp.MustCompile(`(?m)\? no$`).Match(out) {
			return fmt.Sprintf("probes as ext4 but e2fsck -fn: %v\n%s", err, bytes.TrimSpace(out))
		}
		return ""
	}
	return "probes as " + string(c)
}
