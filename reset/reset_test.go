package reset

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

// opaqueXattr is the opaque-directory mark the tests make: the one the
// init's (privileged) overlay uses when the tests run as root, as under
// `make test`, else the one of an unprivileged overlay mount (userxattr).
// The reset copies every xattr of a kept entry and none of its parents, so
// either proves the same rule.
var opaqueXattr = map[bool]string{true: "trusted.overlay.opaque", false: "user.overlay.opaque"}[os.Geteuid() == 0]

// fill makes a data filesystem as a device leaves it: an upper with
// changes (hidden ones, a kept directory, a whiteout and opaque
// directories), and a work dir with overlayfs's mode-000 work/work.
func fill(t testing.TB, dir string, extra int) {
	t.Helper()
	files := map[string]string{
		"upper/etc/dropbear/dropbear_ed25519_host_key": "host key",
		"upper/etc/dropbear/authorized_keys":           "ssh-ed25519 AAAA user",
		"upper/etc/config/network":                     "changed network config",
		"upper/root/.ssh/authorized_keys":              "hidden, must go",
		"upper/.hidden-at-top":                         "must go",
		"upper/var/lib/app/db":                         strings.Repeat("x", 5000),
	}
	for p, c := range files {
		mustWrite(t, filepath.Join(dir, p), c)
	}
	os.Chmod(filepath.Join(dir, "upper/etc/dropbear/dropbear_ed25519_host_key"), 0o600)
	for i := 0; i < extra; i++ {
		mustWrite(t, filepath.Join(dir, fmt.Sprintf("upper/data/d%03d/f%06d", i/1000, i)), "x")
	}
	// A whiteout: a char device 0/0, which Linux >= 5.8 lets any user make.
	if err := unix.Mknod(filepath.Join(dir, "upper/etc/config/firewall"), unix.S_IFCHR, 0); err != nil {
		testenv.Missing(t, "cannot make a whiteout (char 0/0) here: "+err.Error())
	}
	os.MkdirAll(filepath.Join(dir, "upper/usr/share/opaque"), 0o755)
	// The kept directory's parent is opaque in the old upper: the new
	// upper's /etc must not be.
	for _, d := range []string{"upper/usr/share/opaque", "upper/etc", "upper/etc/dropbear"} {
		if err := unix.Setxattr(filepath.Join(dir, d), opaqueXattr, []byte("y"), 0); err != nil {
			testenv.Missing(t, fmt.Sprintf("cannot set %s in %s: %v", opaqueXattr, dir, err))
		}
	}
	os.MkdirAll(filepath.Join(dir, "work/work"), 0o755)
	os.Chmod(filepath.Join(dir, "work/work"), 0)
}

func mustWrite(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tree lists every path below root with its type, mode and content.
func tree(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		if v, err := getxattr(p, opaqueXattr); err == nil {
			line += " opaque=" + v
		}
		out = append(out, line)
		return nil
	})
	sort.Strings(out)
	return out
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

var keepList = []string{"/etc/dropbear", "/etc/not-there"}

// wantUpper is the upper after a reset of fill's data with keepList: the
// kept directory keeps its own opaque mark; its parent does not.
func wantUpper(t *testing.T) []string {
	return []string{
		". drwxr-xr-x",
		"etc drwxr-xr-x",
		"etc/dropbear drwxr-xr-x opaque=y",
		"etc/dropbear/authorized_keys -rw-r--r-- ssh-ed25519 AAAA user",
		"etc/dropbear/dropbear_ed25519_host_key -rw------- host key",
	}
}

func checkReset(t *testing.T, dir string, rec *layout.ResetRecord, trigger string) {
	t.Helper()
	if got, want := tree(t, filepath.Join(dir, "upper")), wantUpper(t); !reflect.DeepEqual(got, want) {
		t.Errorf("upper after reset:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := tree(t, filepath.Join(dir, "work")); len(got) != 1 {
		t.Errorf("work not empty: %v", got)
	}
	if p, _ := Pending(dir); p != nil {
		t.Errorf("request still pending: %+v", p)
	}
	last, err := Last(dir)
	if err != nil || last == nil || last.Trigger != trigger || !reflect.DeepEqual(last.Kept, []string{"/etc/dropbear"}) {
		t.Errorf("last reset = %+v, %v", last, err)
	}
	if rec != nil && !reflect.DeepEqual(rec, last) {
		t.Errorf("returned record %+v, stored %+v", rec, last)
	}
	for _, left := range []string{layout.KeepDir, layout.KeepNewDir} {
		if exists(filepath.Join(dir, layout.MetaDir, left)) {
			t.Errorf("%s left behind", left)
		}
	}
}

func TestPerform(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 0)
	if err := Schedule(dir, TriggerCtl, time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	r := &Resetter{Dir: dir, Keep: keepList}
	rec, err := r.Perform()
	if err != nil {
		t.Fatal(err)
	}
	checkReset(t, dir, rec, TriggerCtl)
	if rec.Resumed || !rec.RequestedAt.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("record %+v", rec)
	}
	if n := TrashCount(dir); n != 2 {
		t.Errorf("trash holds %d trees, want the old upper and work", n)
	}
	if n, err := CollectTrash(filepath.Join(dir, layout.MetaDir, layout.TrashDir)); err != nil || n != 2 {
		t.Errorf("CollectTrash = %d, %v", n, err)
	}
	if n := TrashCount(dir); n != 0 {
		t.Errorf("trash holds %d after collection", n)
	}
	// Nothing pending: nothing done.
	if rec, err := r.Perform(); rec != nil || err != nil {
		t.Errorf("Perform without a request = %+v, %v", rec, err)
	}
}

var errCrash = errors.New("power cut")

// crashAt returns a Before hook that fails at the n-th step (0-based) and
// counts steps.
func crashAt(n int, count *int) func(string) error {
	return func(step string) error {
		i := *count
		*count++
		if i == n {
			return fmt.Errorf("%w before step %d (%s)", errCrash, i, step)
		}
		return nil
	}
}

// TestCrashAtEveryStep cuts the power before every step of a reset, and
// again before every step of the resumed reset; the boot after always
// finishes with the same result.
func TestCrashAtEveryStep(t *testing.T) {
	total := 0
	{
		dir := t.TempDir()
		fill(t, dir, 0)
		Schedule(dir, TriggerButton, time.Now())
		if _, err := (&Resetter{Dir: dir, Keep: keepList, Before: crashAt(-1, &total)}).Perform(); err != nil {
			t.Fatal(err)
		}
	}
	if total < 8 {
		t.Fatalf("only %d steps counted", total)
	}
	for first := 0; first < total; first++ {
		for second := -1; second < total; second++ {
			dir := t.TempDir()
			fill(t, dir, 0)
			Schedule(dir, TriggerButton, time.Now())
			n := 0
			_, err := (&Resetter{Dir: dir, Keep: keepList, Before: crashAt(first, &n)}).Perform()
			if !errors.Is(err, errCrash) {
				t.Fatalf("crash at %d: %v", first, err)
			}
			if second >= 0 {
				n = 0
				_, err := (&Resetter{Dir: dir, Keep: keepList, Before: crashAt(second, &n)}).Perform()
				if err != nil && !errors.Is(err, errCrash) {
					t.Fatalf("crash at %d then %d: %v", first, second, err)
				}
			}
			rec, err := (&Resetter{Dir: dir, Keep: keepList}).Perform()
			if err != nil {
				t.Fatalf("crash at %d then %d: resume: %v", first, second, err)
			}
			// A second crash after the request was cleared leaves nothing to do.
			if rec == nil {
				rec, _ = Last(dir)
			}
			checkReset(t, dir, nil, TriggerButton)
			if t.Failed() {
				t.Fatalf("crash at step %d then %d", first, second)
			}
		}
	}
}

// A copy of the keep-list cut short by a power cut is discarded and redone.
func TestPartialKeepCopyDiscarded(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 0)
	Schedule(dir, TriggerCmdline, time.Now())
	mustWrite(t, filepath.Join(dir, layout.MetaDir, layout.KeepNewDir, "etc/dropbear/half-written"), "junk")
	rec, err := (&Resetter{Dir: dir, Keep: keepList}).Perform()
	if err != nil {
		t.Fatal(err)
	}
	checkReset(t, dir, rec, TriggerCmdline)
}

func TestScheduleCancelPending(t *testing.T) {
	dir := t.TempDir()
	if p, err := Pending(dir); p != nil || err != nil {
		t.Fatalf("fresh: %+v %v", p, err)
	}
	if had, err := Cancel(dir); had || err != nil {
		t.Errorf("cancel with nothing pending: %v %v", had, err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := Schedule(dir, TriggerCtl, now); err != nil {
		t.Fatal(err)
	}
	p, err := Pending(dir)
	if err != nil || p == nil || p.Trigger != TriggerCtl || !p.Time.Equal(now) {
		t.Errorf("pending = %+v, %v", p, err)
	}
	if had, err := Cancel(dir); !had || err != nil {
		t.Errorf("cancel: %v %v", had, err)
	}
	if p, _ := Pending(dir); p != nil {
		t.Errorf("still pending after cancel: %+v", p)
	}
	// A damaged request file is still a request.
	os.WriteFile(filepath.Join(dir, layout.MetaDir, layout.ResetRequestFile), []byte("{trunc"), 0o600)
	if p, _ := Pending(dir); p == nil || !strings.Contains(p.Trigger, "unreadable") {
		t.Errorf("damaged request = %+v", p)
	}
	// No temporary files left behind by the atomic write.
	entries, _ := os.ReadDir(filepath.Join(dir, layout.MetaDir))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left %s", e.Name())
		}
	}
}

func TestCheckKeep(t *testing.T) {
	if err := checkKeep([]string{"/etc/dropbear", "/root/.ssh"}); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"etc", "/", "/etc/../../x", "/..", ""} {
		if err := checkKeep([]string{bad}); err == nil {
			t.Errorf("checkKeep(%q) = nil, want an error", bad)
		}
	}
}

// BenchmarkResetScaling times the boot-path part of a reset (everything
// before the background trash collection) with 1k, 10k and 100k files in
// the upper, in one run, and reports each size's time and the ratio of
// 100k to the 1k baseline. The reset renames the upper aside, so the ratio
// stays near 1.
func BenchmarkResetScaling(b *testing.B) {
	sizes := []int{1000, 10000, 100000}
	dirs := make([]string, len(sizes))
	for i, n := range sizes {
		dirs[i] = b.TempDir()
		fill(b, dirs[i], n)
	}
	total := make([]time.Duration, len(sizes))
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for i, dir := range dirs {
			Schedule(dir, TriggerCtl, time.Now())
			start := time.Now()
			if _, err := (&Resetter{Dir: dir, Keep: keepList}).Perform(); err != nil {
				b.Fatal(err)
			}
			total[i] += time.Since(start)
			b.StopTimer()
			// Put the full upper back for the next round (O(1), untimed).
			trash := filepath.Join(dir, layout.MetaDir, layout.TrashDir)
			entries, _ := os.ReadDir(trash)
			os.RemoveAll(filepath.Join(dir, "upper"))
			os.RemoveAll(filepath.Join(dir, "work"))
			for _, e := range entries {
				name := strings.SplitN(e.Name(), ".", 2)[0]
				os.Rename(filepath.Join(trash, e.Name()), filepath.Join(dir, name))
			}
			b.StartTimer()
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(total[0]), "ms/reset-1k")
	b.ReportMetric(ms(total[1]), "ms/reset-10k")
	b.ReportMetric(ms(total[2]), "ms/reset-100k")
	b.ReportMetric(float64(total[2])/float64(total[0]), "ratio-100k/1k")
}

// fullFS mounts a 4 MiB tmpfs, gives it fill's data, a reset request if
// asked, the boot's reserve if asked, and a file that takes every byte
// left: a data partition that is full. It needs root (mount); the QEMU test
// TestFactoryResetFullPartition proves the same on ext4.
func fullFS(t *testing.T, request, reserve bool) string {
	t.Helper()
	testenv.RequireRoot(t, "mounts a small tmpfs (the QEMU test TestFactoryResetFullPartition covers a full ext4)")
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		testenv.Missing(t, fmt.Sprintf("cannot mount a tmpfs here: %v", err))
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	fill(t, dir, 0)
	if request {
		if err := Schedule(dir, TriggerCmdline, time.Unix(1700000000, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if reserve {
		mustWrite(t, layout.Meta(dir, layout.ReserveFile), strings.Repeat("\x00", layout.ReserveBytes))
	}
	f, err := os.Create(filepath.Join(dir, "upper/big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "probe"), []byte("x"), 0o600); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filesystem not full: writing a byte gave %v", err)
	}
	return dir
}

// A full partition is when a person most wants a reset: asking for one
// and performing it must work then, using the reserve.
func TestResetOnFullPartition(t *testing.T) {
	t.Run("schedule", func(t *testing.T) {
		dir := fullFS(t, false, true)
		if err := Schedule(dir, TriggerCtl, time.Unix(1700000000, 0)); err != nil {
			t.Fatalf("Schedule on a full partition: %v", err)
		}
		if p, err := Pending(dir); err != nil || p == nil || p.Trigger != TriggerCtl {
			t.Errorf("Pending = %+v, %v; want the ovrootctl request", p, err)
		}
		if exists(layout.Meta(dir, layout.ReserveFile)) {
			t.Error("the reserve is still there")
		}
		if had, err := Cancel(dir); !had || err != nil {
			t.Errorf("Cancel on a full partition = %v, %v", had, err)
		}
	})
	t.Run("perform", func(t *testing.T) {
		dir := fullFS(t, true, true)
		r := &Resetter{Dir: dir, Keep: keepList, Now: func() time.Time { return time.Unix(1700000100, 0) }}
		rec, err := r.Perform()
		if err != nil {
			t.Fatalf("Perform on a full partition: %v", err)
		}
		checkReset(t, dir, rec, TriggerCmdline)
		if exists(layout.Meta(dir, layout.ReserveFile)) {
			t.Error("the reserve is still there")
		}
	})
}

// With no reserve left to give, a reset that cannot copy its kept paths
// changes nothing and says so (ErrNoRoom); the request stays.
func TestResetNoRoom(t *testing.T) {
	dir := fullFS(t, true, false)
	before := tree(t, filepath.Join(dir, "upper"))
	_, err := (&Resetter{Dir: dir, Keep: keepList}).Perform()
	if !errors.Is(err, ErrNoRoom) {
		t.Fatalf("Perform on a full partition without a reserve = %v, want ErrNoRoom", err)
	}
	if after := tree(t, filepath.Join(dir, "upper")); !reflect.DeepEqual(after, before) {
		t.Errorf("the upper changed:\n%v\nwant\n%v", after, before)
	}
	if exists(layout.Meta(dir, layout.KeepNewDir)) {
		t.Error("the partial copy of the kept paths was left")
	}
	if p, _ := Pending(dir); p == nil {
		t.Error("the request was withdrawn")
	}
}
