package slot

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/ovroot/ovroot/layout"
)

func TestNames(t *testing.T) {
	for _, c := range []struct {
		file string
		want Name
		ok   bool
	}{
		{"ovroot-a.conf", Name{Slot: "a"}, true},
		{"ovroot-b+3.conf", Name{Slot: "b", Counted: true, Left: 3}, true},
		{"ovroot-b+2-1.conf", Name{Slot: "b", Counted: true, Left: 2, Done: 1}, true},
		{"ovroot-b+0-3.conf", Name{Slot: "b", Counted: true, Left: 0, Done: 3}, true},
		{"ovroot-c.conf", Name{}, false},
		{"ovroot-b+.conf", Name{}, false},
		{"ovroot-b+x.conf", Name{}, false},
		{"ovroot-b+1-.conf", Name{}, false},
		{"ovroot-b.conf.tmp", Name{}, false},
		{"ovroot.conf", Name{}, false},
		{"debian-a.conf", Name{}, false},
	} {
		got, ok := ParseName(c.file)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("ParseName(%q) = %+v, %v; want %+v, %v", c.file, got, ok, c.want, c.ok)
		}
		if ok && got.FileName() != c.file {
			t.Errorf("FileName of %q = %q", c.file, got.FileName())
		}
	}
	if n, _ := ParseName("ovroot-b+0-3.conf"); !n.Abandoned() || n.ID() != "ovroot-b.conf" {
		t.Errorf("ovroot-b+0-3.conf: abandoned %v id %s", n.Abandoned(), n.ID())
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := Entry{Slot: "b", Generation: 7, BuildID: "0123456789abcdef", Options: "console=ttyS0 quiet", Loader: layout.LoaderUEFI, Release: "6.1.0-1"}
	text := e.Text()
	for _, want := range []string{"version 7\n", "sort-key ovroot\n", "linux /slot-b/vmlinuz\n", "initrd /slot-b/initrd.img\n",
		"options console=ttyS0 quiet ovroot.loader=uefi ovroot.slot=b ovroot.build=0123456789abcdef panic=5\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("entry text lacks %q:\n%s", want, text)
		}
	}
	got, err := ParseEntry(text)
	if err != nil {
		t.Fatal(err)
	}
	got.Release = e.Release
	if got != e {
		t.Errorf("ParseEntry = %+v, want %+v", got, e)
	}
	e.Options = "panic=30 console=ttyS0"
	if c := e.KernelCmdline(); strings.Contains(c, "panic=5") {
		t.Errorf("the image's panic= must win: %s", c)
	}
}

func testBundle(t *testing.T, root []byte) []byte {
	t.Helper()
	src := func(name string, data []byte) Source {
		return Source{Name: name, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
	}
	var b bytes.Buffer
	_, key := testKeyPair(t, 1)
	err := WriteBundle(&b, Manifest{Arch: layout.X86_64, Board: "generic", Loader: layout.LoaderUEFI, Tries: 3, Created: time.Unix(0, 0).UTC(), Version: "1"},
		[]Source{src(RootName, root), src(layout.KernelFile, []byte("kernel")), src(layout.InitrdFile, []byte("initrd"))}, &key)
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestBundleRoundTrip(t *testing.T) {
	root := bytes.Repeat([]byte("squashfs"), 10000)
	data := testBundle(t, root)
	pub, _ := testKeyPair(t, 1)
	trust := Trust{Keys: []Key{pub}}
	br, err := Verify(bytes.NewReader(data), trust)
	if err != nil {
		t.Fatal(err)
	}
	m := br.Manifest
	if br.Signer != pub.ID() {
		t.Errorf("signer %q, want %q", br.Signer, pub.ID())
	}
	if m.BuildID != BuildIDOf(root) || len(m.Files) != 3 {
		t.Errorf("manifest %+v", m)
	}
	// A flipped byte inside the root's bytes fails the check.
	i := bytes.Index(data, root[:64]) + 1000
	bad := append([]byte(nil), data...)
	bad[i] ^= 1
	if _, err := Verify(bytes.NewReader(bad), trust); !errors.Is(err, ErrChecksum) {
		t.Errorf("corrupt root: %v, want a checksum error", err)
	}
	// A truncated bundle is refused too.
	// A bundle cut inside the root (a copy that stopped, a USB stick pulled)
	// is refused naming the member and saying it was cut short, not with
	// a bare "unexpected EOF" (the fuzzer found that one).
	if _, err := Verify(bytes.NewReader(data[:len(data)/2]), trust); err == nil || !strings.Contains(err.Error(), "bundle member "+RootName+": the bundle ends after") {
		t.Errorf("truncated bundle: %v, want an error naming %s cut short", err, RootName)
	}
	// The source is read to its end (a source checking its own digest
	// speaks only there); a block device holding more than its bundle
	// (a USB stick it was written to) is read 1 MiB past it and taken.
	errEnd := errors.New("digest mismatch at the end")
	if _, err := Verify(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(errEnd)), trust); !errors.Is(err, errEnd) {
		t.Errorf("a source failing after the bundle's last byte: %v, want %v", err, errEnd)
	}
	stick := &countReader{r: io.MultiReader(bytes.NewReader(data), bytes.NewReader(make([]byte, 64<<20)))}
	if _, err := Verify(stick, trust); err != nil {
		t.Errorf("a bundle on a 64 MiB larger block device: %v", err)
	}
	if stick.n > int64(len(data))+maxTail+1 {
		t.Errorf("read %d bytes of a device holding a %d-byte bundle: want at most 1 MiB past it", stick.n, len(data))
	}
	if _, err := NewReader(strings.NewReader("hello"), trust); err == nil || !strings.Contains(err.Error(), "not an ovroot update bundle") {
		t.Errorf("junk: %v", err)
	}
}

// countReader counts what was read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
