package reset

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/backup"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"golang.org/x/sys/unix"
)

var restoreEpoch = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// makeBackedUpper builds an upper as the kernel leaves one, with all that
// a restore must carry: owners, setuid, a user.* and a trusted.* xattr,
// whiteouts (two sharing an inode, as overlayfs >= 5.8 links them), an
// opaque directory, hard links, symlinks (one absolute), a fifo, a device
// node, a directory with an unusual mode, and overlayfs's own
// trusted.overlay.origin (left out of the layer). full=false leaves out
// what the power-cut model does not carry (owners, setuid, hard links).
func makeBackedUpper(t *testing.T, full bool) string {
	t.Helper()
	testenv.RequireRoot(t, "an upper's whiteouts are char devices 0/0 and its opaque mark a trusted.* xattr")
	up := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(rel, content string, mode uint32) {
		t.Helper()
		p := filepath.Join(up, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, []byte(content), 0o600))
		must(unix.Chmod(p, mode))
	}
	file("etc/hostname", "restored\n", 0o644)
	file("etc/app.conf", "secret\n", 0o640)
	must(unix.Lsetxattr(filepath.Join(up, "etc/app.conf"), "user.comment", []byte("kept"), 0))
	must(unix.Lsetxattr(filepath.Join(up, "etc/app.conf"), "trusted.app", []byte("t"), 0))
	must(unix.Lsetxattr(filepath.Join(up, "etc/hostname"), "trusted.overlay.origin", []byte{0, 1, 2}, 0))
	must(unix.Mknod(filepath.Join(up, "etc/motd"), unix.S_IFCHR, 0))
	must(unix.Mknod(filepath.Join(up, "etc/issue"), unix.S_IFCHR, 0))
	file("usr/share/doc/mine.txt", "doc", 0o644)
	must(unix.Lsetxattr(filepath.Join(up, "usr/share/doc"), "trusted.overlay.opaque", []byte("y"), 0))
	file("usr/bin/tool", "#!/bin/sh\n", 0o755)
	must(os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(up, "etc/localtime")))
	must(os.Symlink("../hostname", filepath.Join(up, "etc/rel-link")))
	must(unix.Mkfifo(filepath.Join(up, "etc/fifo"), 0o620))
	must(unix.Mknod(filepath.Join(up, "etc/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(os.MkdirAll(filepath.Join(up, "srv/ro"), 0o755))
	file("srv/ro/data", strings.Repeat("d", 10000), 0o444)
	must(unix.Chmod(filepath.Join(up, "srv/ro"), 0o555))
	if full {
		must(os.Chown(filepath.Join(up, "etc/app.conf"), 1000, 1001))
		must(os.Link(filepath.Join(up, "etc/issue"), filepath.Join(up, "etc/issue.net")))
		file("usr/bin/su", "#!/bin/sh\n", 0o4755)
		must(os.Link(filepath.Join(up, "usr/bin/su"), filepath.Join(up, "usr/bin/su2")))
		must(os.Lchown(filepath.Join(up, "etc/localtime"), 7, 8))
		must(os.Chown(filepath.Join(up, "srv"), 33, 33))
	}
	// Times last: creating entries touches their directories.
	filepath.WalkDir(up, func(p string, d fs.DirEntry, err error) error {
		must(err)
		ts := []unix.Timespec{unix.NsecToTimespec(restoreEpoch.UnixNano()), unix.NsecToTimespec(restoreEpoch.UnixNano())}
		if p != up {
			must(unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
		}
		return nil
	})
	return up
}

// layerOf is package backup's layer of upper.
func layerOf(t *testing.T, upper string, gz bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := backup.Write(&buf, upper, backup.Options{Gzip: gz}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fullTree lists every entry below root with everything a restore must
// carry: type and mode, owner, device number, content, symlink target,
// mtime (seconds: a layer's precision), xattrs (overlayfs's opaque mark
// included, trusted.overlay.origin not), and which names share an inode.
func fullTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s mode=%o uid=%d gid=%d", rel, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" dev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case unix.S_IFREG:
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" sha=%x", sha256.Sum256(b))
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		whiteout := st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
		if !whiteout {
			line += fmt.Sprintf(" mtime=%d", st.Mtim.Sec)
		}
		if st.Nlink > 1 && !whiteout && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if first, ok := inodes[st.Ino]; ok {
				line += " link=" + first
			} else {
				inodes[st.Ino] = rel
			}
		}
		x := xattrs(p)
		delete(x, "trusted.overlay.origin")
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			line += fmt.Sprintf(" %s=%q", k, x[k])
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// checkRestored checks a finished restore of the upper src on dir.
func checkRestored(t *testing.T, dir string, want []string) {
	t.Helper()
	diffTrees(t, "upper after restore", fullTree(t, filepath.Join(dir, "upper")), want)
	if got := tree(t, filepath.Join(dir, "work")); len(got) != 1 {
		t.Errorf("work not empty: %v", got)
	}
	if p, _ := Pending(dir); p != nil {
		t.Errorf("request still pending: %+v", p)
	}
	last, err := Last(dir)
	if err != nil || last == nil || last.Trigger != TriggerRestore || !last.Restored || last.Kept != nil || last.Failed != "" {
		t.Errorf("last reset = %+v, %v; want a restore", last, err)
	}
	for _, left := range []string{layout.KeepDir, layout.KeepNewDir, layout.RestoreFile, layout.RestoreNewFile} {
		if exists(layout.Meta(dir, left)) {
			t.Errorf("%s left behind", left)
		}
	}
}

// A backup of an upper, restored over another upper, gives the upper
// back: whiteouts as char devices 0/0, the opaque mark, owners, modes,
// setuid, xattrs, hard links, symlinks, devices, fifos and mtimes.
func TestRestore(t *testing.T) {
	src := makeBackedUpper(t, true)
	want := fullTree(t, src)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			layer := layerOf(t, src, gz)
			dir := t.TempDir()
			fill(t, dir, 0)
			now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
			sum, err := ScheduleRestore(dir, bytes.NewReader(layer), now)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Entries != 22 || sum.Bytes != 10000+9+7+3+2*10 {
				t.Errorf("ScheduleRestore summary %+v", sum)
			}
			if b, _ := os.ReadFile(layout.Meta(dir, layout.RestoreFile)); !bytes.Equal(b, layer) {
				t.Error("the staged backup is not the file given")
			}
			p, err := Pending(dir)
			if err != nil || p == nil || p.Trigger != TriggerRestore || p.Restore != layout.RestoreFile || !p.Time.Equal(now) {
				t.Fatalf("pending = %+v, %v", p, err)
			}
			rec, err := (&Resetter{Dir: dir, Keep: keepList}).Perform()
			if err != nil {
				t.Fatal(err)
			}
			checkRestored(t, dir, want)
			if last, _ := Last(dir); !reflect.DeepEqual(rec, last) {
				t.Errorf("returned record %+v, stored %+v", rec, last)
			}
			if n := TrashCount(dir); n != 2 {
				t.Errorf("trash holds %d trees, want the old upper and work", n)
			}
		})
	}
}

// TestRestoreCrashAtEveryStep cuts the power before every step of a
// restore, and again before every step of the resumed one; the boot after
// always finishes with the backup as the upper.
func TestRestoreCrashAtEveryStep(t *testing.T) {
	src := makeBackedUpper(t, true)
	want := fullTree(t, src)
	layer := layerOf(t, src, true)
	setup := func() string {
		dir := t.TempDir()
		fill(t, dir, 0)
		if _, err := ScheduleRestore(dir, bytes.NewReader(layer), time.Now()); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	total := 0
	if _, err := (&Resetter{Dir: setup(), Keep: keepList, Before: crashAt(-1, &total)}).Perform(); err != nil {
		t.Fatal(err)
	}
	if total < 8 {
		t.Fatalf("only %d steps counted", total)
	}
	for first := 0; first < total; first++ {
		for second := -1; second < total; second++ {
			dir := setup()
			n := 0
			if _, err := (&Resetter{Dir: dir, Keep: keepList, Before: crashAt(first, &n)}).Perform(); !errors.Is(err, errCrash) {
				t.Fatalf("crash at %d: %v", first, err)
			}
			if second >= 0 {
				n = 0
				_, err := (&Resetter{Dir: dir, Keep: keepList, Before: crashAt(second, &n)}).Perform()
				if err != nil && !errors.Is(err, errCrash) {
					t.Fatalf("crash at %d then %d: %v", first, second, err)
				}
			}
			if _, err := (&Resetter{Dir: dir, Keep: keepList}).Perform(); err != nil {
				t.Fatalf("crash at %d then %d: resume: %v", first, second, err)
			}
			checkRestored(t, dir, want)
			if t.Failed() {
				t.Fatalf("crash at step %d then %d", first, second)
			}
		}
	}
}

// A power cut after any commit of a restore (the package's fsyncs,
// modelled as ext4 keeps them) leaves the old upper or the restored one
// (or, between the two renames, none, with the restored one complete in
// keep/, which the boot installs before it stacks the overlay), and the
// next boot finishes with the restored one.
func TestRestoreDurable(t *testing.T) {
	src := makeBackedUpper(t, false)
	layer := layerOf(t, src, false)
	dir := t.TempDir()
	fill(t, dir, 0)
	old := tree(t, filepath.Join(dir, "upper"))
	want := tree(t, src)
	if _, err := ScheduleRestore(dir, bytes.NewReader(layer), time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	pc := watchPowerCuts(t, dir)
	if _, err := (&Resetter{Dir: dir}).Perform(); err != nil {
		t.Fatal(err)
	}
	fsync = (*os.File).Sync
	last := len(pc.commits) - 1
	for k := range pc.commits {
		d := pc.after(k)
		upper := filepath.Join(d, "upper")
		switch {
		case exists(upper):
			if got := tree(t, upper); !reflect.DeepEqual(got, old) && !reflect.DeepEqual(got, want) {
				t.Fatalf("power cut after commit %d of %d: the upper is neither the old nor the restored one:\n%s", k, last, strings.Join(got, "\n"))
			}
		case exists(layout.Meta(d, layout.KeepDir)):
			diffTrees(t, fmt.Sprintf("power cut after commit %d of %d: keep/", k, last), tree(t, layout.Meta(d, layout.KeepDir)), want)
		default:
			t.Fatalf("power cut after commit %d of %d: no upper and no keep/", k, last)
		}
		if _, err := (&Resetter{Dir: d}).Perform(); err != nil {
			t.Fatalf("power cut after commit %d of %d: the next boot: %v", k, last, err)
		}
		diffTrees(t, fmt.Sprintf("power cut after commit %d of %d, then a boot", k, last), tree(t, upper), want)
		for _, left := range []string{layout.ResetRequestFile, layout.RestoreFile, layout.KeepDir, layout.KeepNewDir} {
			if exists(layout.Meta(d, left)) {
				t.Errorf("power cut after commit %d of %d, then a boot: %s left", k, last, left)
			}
		}
		if l, _ := Last(d); l == nil || !l.Restored {
			t.Errorf("power cut after commit %d of %d, then a boot: last reset %+v", k, last, l)
		}
	}
}

// At no power cut in ScheduleRestore is there a request without its whole
// backup.
func TestScheduleRestoreDurable(t *testing.T) {
	layer := layerOf(t, makeBackedUpper(t, false), true)
	dir := t.TempDir()
	pc := watchPowerCuts(t, dir)
	if _, err := ScheduleRestore(dir, bytes.NewReader(layer), time.Now()); err != nil {
		t.Fatal(err)
	}
	last := len(pc.commits) - 1
	for k := range pc.commits {
		d := pc.after(k)
		p, err := Pending(d)
		if err != nil {
			t.Fatal(err)
		}
		if k == last && p == nil {
			t.Errorf("power cut after the last commit: no request")
		}
		if p == nil {
			continue
		}
		b, err := os.ReadFile(layout.Meta(d, p.Restore))
		if err != nil || !bytes.Equal(b, layer) {
			t.Errorf("power cut after commit %d of %d: a request for a backup that is not whole on disk (%d of %d bytes, %v)", k, last, len(b), len(layer), err)
		}
	}
}

// hdr is a tar entry of a hand-made layer.
type hdr struct {
	name, link string
	typ        byte
	body       string
	major      int64
}

func makeTar(t testing.TB, entries ...hdr) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Devmajor: e.major, Format: tar.FormatPAX, ModTime: restoreEpoch}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// badLayers are layers a restore refuses, each with what the error names.
func badLayers(t testing.TB, outside string) []struct {
	name  string
	layer []byte
	want  string
} {
	reg := func(n string) hdr { return hdr{name: n, typ: tar.TypeReg, body: "x"} }
	good := makeTar(t, hdr{name: "etc/", typ: tar.TypeDir}, reg("etc/a"), reg("etc/b"))
	gz := gzipped(good)
	return []struct {
		name  string
		layer []byte
		want  string
	}{
		{"dot-dot", makeTar(t, reg("../x")), `"../x": not a clean name`},
		{"dot-dot inside", makeTar(t, reg("etc/../../x")), `"etc/../../x": not a clean name`},
		{"absolute", makeTar(t, reg("/abs")), `"/abs": an absolute name`},
		{"symlink escape", makeTar(t, hdr{name: "a", typ: tar.TypeSymlink, link: outside}, reg("a/passwd")), `"a/passwd": is below "a", a symlink of the layer`},
		{"symlink escape, directory", makeTar(t, hdr{name: "a", typ: tar.TypeSymlink, link: outside}, hdr{name: "a/d/", typ: tar.TypeDir}), `"a/d/": is below "a", a symlink`},
		{"hard link out", makeTar(t, hdr{name: "l", typ: tar.TypeLink, link: "../../etc/passwd"}), `"l": hard link to "../../etc/passwd": not a clean name`},
		{"hard link absolute", makeTar(t, hdr{name: "l", typ: tar.TypeLink, link: "/etc/passwd"}), `"l": hard link to "/etc/passwd": an absolute name`},
		{"hard link forward", makeTar(t, hdr{name: "l", typ: tar.TypeLink, link: "f"}, reg("f")), `"l": hard link to "f", which is not a file listed before it`},
		{"hard link to a directory", makeTar(t, hdr{name: "d/", typ: tar.TypeDir}, hdr{name: "l", typ: tar.TypeLink, link: "d"}), `which is not a file`},
		{"below a file", makeTar(t, reg("f"), reg("f/g")), `"f/g": is below "f", which is not a directory`},
		{"file over a directory", makeTar(t, reg("d/f"), reg("d")), `"d": comes after entries below it`},
		{"twice", makeTar(t, reg("f"), reg("f")), `"f": listed twice`},
		{"whiteout and entry", makeTar(t, reg(".wh.f"), reg("f")), `"f": the layer also has a whiteout of it`},
		{"empty whiteout", makeTar(t, reg("etc/.wh.")), `"etc/.wh.": not a well-formed whiteout`},
		{"aufs name", makeTar(t, reg(".wh..wh.plnk")), `not a well-formed whiteout`},
		{"whiteout directory", makeTar(t, hdr{name: ".wh.d/", typ: tar.TypeDir}), `a whiteout name must be a regular file`},
		{"opaque root", makeTar(t, reg(".wh..wh..opq")), `an opaque mark on the root`},
		{"char 0/0", makeTar(t, hdr{name: "w", typ: tar.TypeChar}), `"w": a character device 0/0 is an overlayfs whiteout`},
		{"unknown type", makeTar(t, hdr{name: "c", typ: tar.TypeCont}), `"c": type '7' is not restored`},
		{"cut at an entry", good[:1536], "cut short"},
		{"cut in a file", good[:1024], `"etc/a": unexpected EOF`},
		{"gzip cut", gz[:len(gz)-6], "unexpected EOF"},
		{"gzip checksum", append(append([]byte{}, gz[:len(gz)-8]...), 0, 0, 0, 0, 0, 0, 0, 0), "gzip"},
		{"not a tar", []byte(strings.Repeat("not a tar\n", 100)), "not a readable layer tarball"},
		{"empty", nil, "not a readable layer tarball"},
	}
}

// A bad layer is refused by ScheduleRestore, naming the entry, before
// anything changes: no staged copy, the pending request as it was.
func TestScheduleRestoreRefuses(t *testing.T) {
	for _, tc := range badLayers(t, "/etc") {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			when := time.Unix(1700000000, 0)
			if err := Schedule(dir, TriggerButton, when); err != nil {
				t.Fatal(err)
			}
			_, err := ScheduleRestore(dir, bytes.NewReader(tc.layer), time.Now())
			var bad *BadLayerError
			if !errors.As(err, &bad) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ScheduleRestore = %v, want a *BadLayerError with %q", err, tc.want)
			}
			for _, name := range []string{layout.RestoreFile, layout.RestoreNewFile} {
				if exists(layout.Meta(dir, name)) {
					t.Errorf("%s written", name)
				}
			}
			if p, _ := Pending(dir); p == nil || p.Trigger != TriggerButton || p.Restore != "" {
				t.Errorf("pending request changed: %+v", p)
			}
		})
	}
}

// The same layers, forced into the staged backup behind ovrootctl's back
// (or damaged on the flash), are refused at boot: nothing is written
// outside keep.new, the old upper stays, and the request is dropped with
// a record saying why.
func TestRestoreBadLayerAtBoot(t *testing.T) {
	testenv.RequireRoot(t, "fill's upper has a trusted.* opaque mark")
	for i, tc := range badLayers(t, "") {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			if err := os.Mkdir(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(base, "data")
			fill(t, dir, 0)
			layer := badLayers(t, outside)[i].layer
			old := fullTree(t, filepath.Join(dir, "upper"))
			forceRestore(t, dir, layer)
			rec, err := (&Resetter{Dir: dir, Keep: keepList}).Perform()
			if !errors.Is(err, ErrRestoreDropped) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Perform = %v, want ErrRestoreDropped with %q", err, tc.want)
			}
			checkDropped(t, dir, rec, old)
			for _, p := range []string{filepath.Join(outside, "passwd"), filepath.Join(outside, "d"), filepath.Join(base, "x"), layout.Meta(dir, "x")} {
				if exists(p) {
					t.Errorf("%s written outside the upper", p)
				}
			}
		})
	}
}

// forceRestore stages layer as a restore without ScheduleRestore's check.
func forceRestore(t *testing.T, dir string, layer []byte) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, layout.MetaDir), 0o700)
	if err := os.WriteFile(layout.Meta(dir, layout.RestoreFile), layer, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(meta(dir), layout.ResetRequestFile, []byte(`{"trigger":"restore","time":"2026-01-01T00:00:00Z","restore":"restore.tar"}`)); err != nil {
		t.Fatal(err)
	}
}

func checkDropped(t *testing.T, dir string, rec *layout.ResetRecord, old []string) {
	t.Helper()
	diffTrees(t, "the upper after a dropped restore", fullTree(t, filepath.Join(dir, "upper")), old)
	if rec == nil || rec.Failed == "" || rec.Restored {
		t.Errorf("record %+v, want one saying why the restore failed", rec)
	}
	if last, _ := Last(dir); !reflect.DeepEqual(last, rec) {
		t.Errorf("stored record %+v, returned %+v", last, rec)
	}
	if p, _ := Pending(dir); p != nil {
		t.Errorf("request kept: %+v (it would fail every boot)", p)
	}
	for _, left := range []string{layout.KeepDir, layout.KeepNewDir, layout.RestoreFile} {
		if exists(layout.Meta(dir, left)) {
			t.Errorf("%s left behind", left)
		}
	}
	if n := TrashCount(dir); n != 0 {
		t.Errorf("%d trees retired", n)
	}
}

// A staged backup cut short on the flash after ovrootctl checked it (or
// gone) leaves the old upper.
func TestRestoreTruncatedAtBoot(t *testing.T) {
	src := makeBackedUpper(t, true)
	for _, tc := range []struct {
		name string
		gz   bool
		cut  func(p string) error
	}{
		{"plain, half", false, func(p string) error { st, _ := os.Stat(p); return os.Truncate(p, st.Size()/2) }},
		{"gzip, half", true, func(p string) error { st, _ := os.Stat(p); return os.Truncate(p, st.Size()/2) }},
		{"plain, the end marker lost", false, func(p string) error { st, _ := os.Stat(p); return os.Truncate(p, st.Size()-1024) }},
		{"missing", true, os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fill(t, dir, 0)
			old := fullTree(t, filepath.Join(dir, "upper"))
			if _, err := ScheduleRestore(dir, bytes.NewReader(layerOf(t, src, tc.gz)), time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := tc.cut(layout.Meta(dir, layout.RestoreFile)); err != nil {
				t.Fatal(err)
			}
			rec, err := (&Resetter{Dir: dir, Keep: keepList}).Perform()
			if !errors.Is(err, ErrRestoreDropped) {
				t.Fatalf("Perform = %v, want ErrRestoreDropped", err)
			}
			checkDropped(t, dir, rec, old)
		})
	}
}

// A request's backup name is a file in .ovroot, nothing else.
func TestRestoreRequestNameConfined(t *testing.T) {
	testenv.RequireRoot(t, "fill's upper has a trusted.* opaque mark")
	dir := t.TempDir()
	fill(t, dir, 0)
	old := fullTree(t, filepath.Join(dir, "upper"))
	os.MkdirAll(meta(dir), 0o700)
	os.WriteFile(filepath.Join(dir, "elsewhere.tar"), makeTar(t, hdr{name: "f", typ: tar.TypeReg, body: "x"}), 0o600)
	WriteAtomic(meta(dir), layout.ResetRequestFile, []byte(`{"trigger":"restore","restore":"../elsewhere.tar"}`))
	rec, err := (&Resetter{Dir: dir}).Perform()
	if !errors.Is(err, ErrRestoreDropped) || !strings.Contains(err.Error(), "not a file name in .ovroot") {
		t.Fatalf("Perform = %v", err)
	}
	checkDropped(t, dir, rec, old)
}

// Cancel and a factory-reset request remove a staged backup; a staged
// backup no request names is removed by the next boot.
func TestRestoreCancelReplaceStale(t *testing.T) {
	layer := makeTar(t, hdr{name: "f", typ: tar.TypeReg, body: "x"})
	dir := t.TempDir()
	if _, err := ScheduleRestore(dir, bytes.NewReader(layer), time.Now()); err != nil {
		t.Fatal(err)
	}
	if had, err := Cancel(dir); !had || err != nil {
		t.Fatalf("Cancel = %v, %v", had, err)
	}
	if exists(layout.Meta(dir, layout.RestoreFile)) {
		t.Error("Cancel left the staged backup")
	}
	ScheduleRestore(dir, bytes.NewReader(layer), time.Now())
	if err := Schedule(dir, TriggerCtl, time.Now()); err != nil {
		t.Fatal(err)
	}
	if p, _ := Pending(dir); p == nil || p.Restore != "" || exists(layout.Meta(dir, layout.RestoreFile)) {
		t.Errorf("a factory reset after a restore: pending %+v, staged backup there: %v", p, exists(layout.Meta(dir, layout.RestoreFile)))
	}
	Cancel(dir)
	os.WriteFile(layout.Meta(dir, layout.RestoreFile), layer, 0o600)
	os.WriteFile(layout.Meta(dir, layout.RestoreNewFile), layer[:100], 0o600)
	if had, err := RemoveStaleRestore(dir); !had || err != nil {
		t.Errorf("RemoveStaleRestore = %v, %v", had, err)
	}
	if exists(layout.Meta(dir, layout.RestoreFile)) || exists(layout.Meta(dir, layout.RestoreNewFile)) {
		t.Error("stale backup left")
	}
}

// A backup the partition has no room to unpack at boot is refused up
// front, and nothing is staged.
func TestScheduleRestoreNoRoom(t *testing.T) {
	testenv.RequireRoot(t, "mounts a small tmpfs")
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		testenv.Missing(t, fmt.Sprintf("cannot mount a tmpfs here: %v", err))
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	// 3.5 MiB of zeros: a few KiB gzipped, more than 4 MiB less the
	// 1 MiB reserve unpacked.
	layer := gzipped(makeTar(t, hdr{name: "big", typ: tar.TypeReg, body: string(make([]byte, 3<<20+512<<10))}))
	_, err := ScheduleRestore(dir, bytes.NewReader(layer), time.Now())
	if err == nil || !strings.Contains(err.Error(), "needs about 3584 KiB unpacked") {
		t.Fatalf("ScheduleRestore = %v, want the room it needs", err)
	}
	if exists(layout.Meta(dir, layout.RestoreFile)) || exists(layout.Meta(dir, layout.RestoreNewFile)) {
		t.Error("staged anyway")
	}
	if p, _ := Pending(dir); p != nil {
		t.Errorf("request written: %+v", p)
	}
	// Half of it fits.
	layer = gzipped(makeTar(t, hdr{name: "big", typ: tar.TypeReg, body: string(make([]byte, 1<<20))}))
	if _, err := ScheduleRestore(dir, bytes.NewReader(layer), time.Now()); err != nil {
		t.Errorf("ScheduleRestore of 1 MiB on a 4 MiB tmpfs: %v", err)
	}
}

// FuzzRestoreLayer: a staged backup is read at boot by PID 1 from a
// partition anything could have written. CheckLayer never panics, the
// unpack accepts exactly what the check accepts, and it writes nothing
// outside its directory.
func FuzzRestoreLayer(f *testing.F) {
	for _, tc := range badLayers(f, "/tmp") {
		f.Add(tc.layer)
	}
	f.Add(makeTar(f, hdr{name: "etc/", typ: tar.TypeDir}, hdr{name: "etc/f", typ: tar.TypeReg, body: "x"},
		hdr{name: "etc/l", typ: tar.TypeSymlink, link: "/etc/passwd"}, hdr{name: "etc/h", typ: tar.TypeLink, link: "etc/f"},
		hdr{name: "etc/.wh.gone", typ: tar.TypeReg}, hdr{name: "etc/.wh..wh..opq", typ: tar.TypeReg}))
	root := os.Geteuid() == 0
	f.Fuzz(func(t *testing.T, layer []byte) {
		_, checkErr := CheckLayer(bytes.NewReader(layer))
		if !root {
			return
		}
		base := t.TempDir()
		keepNew := filepath.Join(base, "keep.new")
		os.Mkdir(keepNew, 0o755)
		_, err := unpackLayer(bytes.NewReader(layer), keepNew)
		if (err == nil) != (checkErr == nil) {
			t.Fatalf("CheckLayer = %v, unpack = %v", checkErr, err)
		}
		entries, _ := os.ReadDir(base)
		if len(entries) != 1 {
			t.Fatalf("unpack wrote beside its directory: %v", entries)
		}
	})
}
