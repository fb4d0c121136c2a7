package integration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/logwrites"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

// growFactor is how much larger than the image the test disks are.
const growFactor = 4

// smallGrowImage is an image with a small boot and data partition: the
// disk files and the logs stay small.
func smallGrowImage(t *testing.T, arch layout.Arch) image {
	t.Helper()
	return buildImage(t, arch, makeSmallRootfs(t, arch), func(im *config.Image) {
		im.BootSize = 40 << 20
		im.DataSize = 64 << 20
	})
}

// enlarge makes the disk file growFactor times its size, as dd of the image
// onto a larger SD card leaves it (zeros after the image), and returns the
// new size.
func enlarge(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size() * growFactor
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return size
}

// grownDataSize is the size the data partition starting at start must
// have on a disk of size bytes: up to the last 1 MiB boundary before the
// backup GPT (32 sectors of entries and the header).
func grownDataSize(size, start int64) int64 {
	usableEnd := size - 33*512
	return usableEnd/(1<<20)*(1<<20) - start
}

// checkGrownOnHost reads the disk file's GPT with go-diskfs: the backup
// header must be in the last sector, the data partition must end where a
// full grow puts it.
func checkGrownOnHost(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tb, err := gpt.Read(file.New(f, true), 512, 512)
	if err != nil {
		t.Fatalf("read the GPT of %s: %v", path, err)
	}
	if err := tb.Verify(file.New(f, true), uint64(size)); err != nil {
		t.Errorf("GPT of %s: %v", path, err)
	}
	last := make([]byte, 512)
	if _, err := f.ReadAt(last, size-512); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(last, []byte("EFI PART")) || binary.LittleEndian.Uint64(last[24:]) != uint64(size/512-1) {
		t.Errorf("the last sector of %s holds no backup GPT header for itself", path)
	}
	for _, p := range tb.Partitions {
		if p.Name != layout.DataLabel {
			continue
		}
		start := int64(p.Start) * 512
		if got, want := int64(p.End+1)*512-start, grownDataSize(size, start); got != want {
			t.Errorf("the GPT gives %s %d bytes, want %d", layout.DataLabel, got, want)
		}
		return
	}
	t.Errorf("no partition %s in the GPT of %s", layout.DataLabel, path)
}

var statfsRE = regexp.MustCompile(`size=(\d+)`)

// checkGrownInGuest reads the data partition's size as the kernel knows it
// and the size of the filesystem at /overlay (statfs, as df).
func checkGrownInGuest(t *testing.T, vm *qemu.VM, what string, want int64) {
	t.Helper()
	sectors, err := strconv.ParseInt(strings.TrimSpace(guest(t, vm, "cat /sys/class/block/vda3/size")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if sectors*512 != want {
		t.Errorf("%s: the kernel gives vda3 %d bytes, want %d", what, sectors*512, want)
	}
	out := guest(t, vm, "statfs /overlay")
	m := statfsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("statfs /overlay: %q", out)
	}
	fs, _ := strconv.ParseInt(m[1], 10, 64)
	// statfs leaves out the filesystem's own metadata (a few percent).
	if fs > want || fs < want*9/10 {
		t.Errorf("%s: the filesystem at /overlay is %d bytes (statfs), want about %d", what, fs, want)
	}
	t.Logf("%s: vda3 %d bytes, /overlay %d bytes (%s)", what, sectors*512, fs, strings.TrimSpace(out))
}

// TestGrowDisk: an image copied to a disk four times its size grows on its
// first boot (backup GPT at the end, data partition and ext4 to the end),
// keeps a file across a power-off, and the next boot does nothing more.
func TestGrowDisk(t *testing.T) {
	requireTools(t)
	t.Parallel()
	for _, arch := range layout.Arches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			img := smallGrowImage(t, arch)
			size := enlarge(t, img.path)
			start, _ := partRange(t, img, layout.DataLabel)
			want := grownDataSize(size, start)

			vm := boot(t, img)
			expect(t, vm, "ovroot: growing the GPT")
			expect(t, vm, "ovroot: grew data partition /dev/vda3")
			expect(t, vm, "is blank: formatting it ext4")
			expect(t, vm, "GUEST: ready")
			checkGrownInGuest(t, vm, "first boot", want)
			guest(t, vm, "write /etc/grown.txt written-after-the-grow")
			powerOff(t, vm)
			checkGrownOnHost(t, img.path, size)
			fsck(t, img, layout.DataLabel)

			vm = boot(t, img)
			expect(t, vm, "GUEST: ready")
			if got := guest(t, vm, "cat /etc/grown.txt"); got != "written-after-the-grow\n" {
				t.Errorf("after a power-off, /etc/grown.txt = %q", got)
			}
			checkGrownInGuest(t, vm, "second boot", want)
			if l := grepLines(vm.Console(), "ovroot: gr"); l != "" {
				t.Errorf("the second boot grew again:\n%s", l)
			}
			powerOff(t, vm)
		})
	}
}

// TestGrowPowerCut records the first boot of a used image (a file in its
// upper) on a disk four times its size, rebuilds seeded power cuts of it
// from the write log (flush boundaries, with a random subset of the writes
// pending there), and boots each: every one must come up persistent, grown,
// with the file intact and a clean data filesystem. One more state has a
// half-written primary GPT (the new header over the old entries) and a
// complete new backup: the init must repair the primary from the backup.
// OVROOT_GROW_SEED replays a run.
func TestGrowPowerCut(t *testing.T) {
	requireTools(t)
	t.Parallel()
	arch := layout.X86_64
	seed := testenv.Int(t, "OVROOT_GROW_SEED", time.Now().UnixNano()%1e9, 0)
	t.Logf("OVROOT_GROW_SEED=%d", seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()

	img := smallGrowImage(t, arch)
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	guest(t, vm, "write /etc/before-grow.txt written-before-the-grow")
	powerOff(t, vm)
	size := enlarge(t, img.path)
	dataStart, _ := partRange(t, img, layout.DataLabel)
	want := grownDataSize(size, dataStart)
	startDisk := filepath.Join(dir, "start.img")
	if err := copySparse(startDisk, img.path, 0, -1); err != nil {
		t.Fatal(err)
	}

	logPath := filepath.Join(dir, "writes.log")
	vm = boot(t, img, withWriteLog(logPath))
	expect(t, vm, "ovroot: grew the data filesystem")
	expect(t, vm, "GUEST: ready")
	powerOff(t, vm)
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	l, err := logwrites.Read(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	bounds := l.Boundaries()
	t.Logf("recorded the growing boot: %d entries, %d flushes", len(l.Entries), len(bounds)-1)
	if len(bounds) < 6 {
		t.Fatalf("only %d flushes recorded", len(bounds)-1)
	}

	// Two cuts in the GPT rewrite (its first flushes: backup, primary,
	// protective MBR), three anywhere later (the online resize of the
	// filesystem and its journal checkpoints).
	var points []int
	for _, i := range rng.Perm(3)[:2] {
		points = append(points, bounds[i+1])
	}
	rest := bounds[4:]
	for _, i := range rng.Perm(len(rest))[:3] {
		points = append(points, rest[i])
	}
	for n, b := range points {
		cuts := l.Cuts(b, 1, rng)
		cut := cuts[len(cuts)-1] // a subset where there is one
		disk := filepath.Join(dir, fmt.Sprintf("crash-%d.img", n))
		if err := copySparse(disk, startDisk, 0, -1); err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(disk, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = l.ReplayCut(w, cut)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		kept := filepath.Join(os.TempDir(), fmt.Sprintf("ovroot-grow-crash-%d-%d.img", seed, n))
		if err := copySparse(kept, disk, 0, -1); err != nil {
			t.Fatal(err)
		}
		bootGrowState(t, fmt.Sprintf("cut %d at %s", n, cut), image{arch: arch, path: disk}, size, want, "", kept)
	}

	// The primary GPT half-written: the new backup is complete, the new
	// primary header landed, its entries did not.
	grown, err := os.ReadFile(img.path)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "half-primary.img")
	if err := copySparse(disk, startDisk, 0, -1); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteAt(grown[size-33*512:], size-33*512) // backup entries and header
	w.WriteAt(grown[512:1024], 512)             // the primary header alone
	w.Close()
	bootGrowState(t, "half-written primary GPT", image{arch: arch, path: disk}, size, want, "primary GPT repaired from the backup", "")
}

// bootGrowState boots one crash state, in parallel with the others, and
// checks it ends grown, with the file written before the grow, and a
// clean data filesystem. kept is a copy of the state as it was before its
// boot: removed when the state passes, named when it fails.
func bootGrowState(t *testing.T, what string, img image, size, want int64, wantLog, kept string) {
	t.Helper()
	t.Run(strings.ReplaceAll(what, " ", "_"), func(t *testing.T) {
		t.Parallel()
		if kept != "" {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("the crash state as it was before its boot is kept in %s", kept)
				} else {
					os.Remove(kept)
				}
			})
		}
		vm := boot(t, img)
		if _, err := vm.Expect(bootTimeout, "GUEST: ready"); err != nil {
			t.Fatalf("%s: the device did not come up: %v", what, err)
		}
		if wantLog != "" && !strings.Contains(vm.Console(), wantLog) {
			t.Errorf("%s: the console lacks %q:\n%s", what, wantLog, grepLines(vm.Console(), "ovroot:"))
		}
		if strings.Contains(vm.Console(), "VOLATILE") || strings.Contains(vm.Console(), "ovroot: repairing") {
			t.Errorf("%s: volatile or repaired:\n%s", what, grepLines(vm.Console(), "ovroot:"))
		}
		if got, err := guestErr(vm, "cat /etc/before-grow.txt"); err != nil || got != "written-before-the-grow\n" {
			t.Errorf("%s: /etc/before-grow.txt = %q, %v", what, got, err)
		}
		checkGrownInGuest(t, vm, what, want)
		t.Logf("%s:\n%s", what, grepLines(vm.Console(), "ovroot: gr"))
		powerOff(t, vm)
		checkGrownOnHost(t, img.path, size)
		fsckAfterCut(t, img, layout.DataLabel)
	})
}

// fsckAfterCut is fsck for a disk whose history holds a power cut: e2fsck
// -fn must find nothing but what crashFsckProblems leaves out, the
// superblock's global free block and inode counts, which the kernel
// recomputes at every mount and does not write back until an unmount our
// guests never do (seen after a cut during the online resize: the counts
// of before the new groups). Everything else, per-group counts included,
// stays a failure.
func fsckAfterCut(t *testing.T, img image, label string) {
	t.Helper()
	p := partition(t, img, label)
	out, err := exec.Command("e2fsck", "-fn", p).CombinedOutput()
	if problems := crashFsckProblems(string(out)); len(problems) > 0 || (err != nil && !fsckFindings.Match(out)) {
		t.Fatalf("e2fsck -fn on %s of %s: %v %q\n%s", label, img.path, err, problems, out)
	}
	t.Logf("e2fsck -fn %s: clean but for the global free counts\n%s", label, out)
}
