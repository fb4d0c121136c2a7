package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/internal/kmod"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/u-root/u-root/pkg/cpio"
)

// readArchive decompresses and reads every record.
func readArchive(t *testing.T, data []byte) map[string]cpio.Record {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]cpio.Record{}
	for _, r := range recs {
		if _, dup := m[r.Name]; dup {
			t.Errorf("%s appears twice", r.Name)
		}
		m[r.Name] = r
	}
	return m
}

func content(t *testing.T, r cpio.Record) string {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fakeInit(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "init")
	if err := os.WriteFile(p, []byte("\x7fELF fake init"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildContents(t *testing.T) {
	extra := filepath.Join(t.TempDir(), "x")
	os.WriteFile(extra, []byte("extra"), 0o600)
	var buf bytes.Buffer
	rep, err := Build(context.Background(), Options{
		Arch:       layout.X86_64,
		InitBinary: fakeInit(t),
		InitConfig: []byte("root_label = \"r\"\n"),
		Files:      []File{{Path: "/usr/share/x", Source: extra, Mode: 0o600}},
	}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Bytes != int64(buf.Len()) {
		t.Errorf("report says %d bytes, wrote %d", rep.Bytes, buf.Len())
	}
	recs := readArchive(t, buf.Bytes())
	init, ok := recs["init"]
	if !ok || init.Mode&0o777 != 0o755 || content(t, init) != "\x7fELF fake init" {
		t.Errorf("/init = %+v", init.Info)
	}
	con := recs["dev/console"]
	if con.Mode&cpio.S_IFMT != cpio.S_IFCHR || con.Rmajor != 5 || con.Rminor != 1 {
		t.Errorf("/dev/console = %+v, want char 5:1", con.Info)
	}
	if got := content(t, recs[strings.TrimPrefix(layout.InitConfigPath, "/")]); got != "root_label = \"r\"\n" {
		t.Errorf("config = %q", got)
	}
	if got := content(t, recs["usr/share/x"]); got != "extra" {
		t.Errorf("extra file = %q", got)
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "rom", "overlay", "usr", "usr/share", "etc", "etc/ovroot"} {
		if r, ok := recs[d]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFDIR {
			t.Errorf("directory %s missing", d)
		}
	}
	for name, r := range recs {
		if r.UID != 0 || r.GID != 0 || r.MTime != 0 {
			t.Errorf("%s: uid %d gid %d mtime %d, want zeros", name, r.UID, r.GID, r.MTime)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Arch: "mips", InitBinary: "x"}, "unknown arch"},
		{Options{Arch: layout.ARM64, InitBinary: fakeInit(t), Modules: []string{"ext4"}}, "no modules directory"},
		{Options{Arch: layout.ARM64, InitBinary: filepath.Join(t.TempDir(), "none")}, "init binary"},
		{Options{Arch: layout.ARM64, InitBinary: fakeInit(t), Files: []File{{Path: "rel", Source: "x"}}}, "must be absolute"},
		{Options{Arch: layout.ARM64, InitBinary: fakeInit(t), ModulesDir: t.TempDir(), Modules: []string{"ext4"}}, "no kernel modules"},
	} {
		if _, err := Build(ctx, c.o, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.o, err, c.want)
		}
	}
}

// TestBuildModules uses a real Debian modules tree: only the closure goes
// in, in load order, and the same inputs give the same bytes.
func TestBuildModules(t *testing.T) {
	dir := filepath.Join(testenv.KernelCache(), "arm64", "modules")
	if _, err := os.Stat(dir); err != nil {
		testenv.Missing(t, "no kernel in "+dir+" (run make kernels)")
	}
	o := Options{Arch: layout.ARM64, InitBinary: fakeInit(t), ModulesDir: dir, Modules: []string{"ext4", "virtio_blk"}}
	var a, b bytes.Buffer
	rep, err := Build(context.Background(), o, &a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), o, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two builds from the same inputs differ")
	}
	recs := readArchive(t, a.Bytes())
	var load []string
	waits := map[string]string{} // module file name: the rest of its line
	for _, line := range strings.Split(strings.TrimSpace(content(t, recs[strings.TrimPrefix(layout.ModuleLoadList, "/")])), "\n") {
		f := strings.Fields(line)
		load = append(load, f[0])
		waits[path.Base(f[0])] = strings.Join(f[1:], " ")
	}
	// What the init schedules by: ext4 needs jbd2, mbcache and crc16 and
	// wants crc32c (softdep pre:) first; jbd2 wants crc32c too.
	for mod, want := range map[string]string{
		"ext4.ko":           "deps=crc16,jbd2,mbcache after=crc32c_generic",
		"jbd2.ko":           "after=crc32c_generic",
		"crc32c_generic.ko": "",
	} {
		if waits[mod] != want {
			t.Errorf("load list line of %s: %q after the path, want %q", mod, waits[mod], want)
		}
	}
	if len(load) != len(rep.Modules) || len(load) == 0 {
		t.Fatalf("load list %v, report %v", load, rep.Modules)
	}
	kos := 0
	for name := range recs {
		if strings.HasSuffix(name, ".ko") {
			kos++
		}
	}
	if kos != len(load) {
		t.Errorf("%d .ko files carried, %d in the load list: only the closure belongs in", kos, len(load))
	}
	// The archive carries exactly the closure kmod resolves, in its order:
	// a module lost on the way (jbd2, and ext4 does not load) fails here.
	ix, err := kmod.LoadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	closure, err := ix.Closure(o.Modules...)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range closure {
		want = append(want, "/lib/modules/"+rep.Release+"/"+m.Path)
	}
	if !reflect.DeepEqual(load, want) {
		t.Errorf("load list:\n%s\nwant the closure of %v:\n%s", strings.Join(load, "\n"), o.Modules, strings.Join(want, "\n"))
	}
	pos := map[string]int{}
	for i, p := range load {
		if _, ok := recs[strings.TrimPrefix(p, "/")]; !ok {
			t.Errorf("load list names %s, which is not in the archive", p)
		}
		if !strings.HasPrefix(p, "/lib/modules/"+rep.Release+"/") {
			t.Errorf("%s is not under /lib/modules/%s", p, rep.Release)
		}
		pos[strings.TrimSuffix(filepath.Base(p), ".ko")] = i
	}
	// Users after their dependencies; each name must be there, or a lookup
	// of a missing one (position 0) would pass.
	for _, dep := range [][2]string{{"jbd2", "ext4"}, {"mbcache", "ext4"}, {"crc32c_generic", "ext4"}, {"virtio_blk", "virtio_blk"}} {
		d, dok := pos[dep[0]]
		u, uok := pos[dep[1]]
		if !dok || !uok || d > u {
			t.Errorf("%s (in the list: %v, at %d) must come before %s (%v, at %d): %v", dep[0], dok, d, dep[1], uok, u, load)
		}
	}
}
