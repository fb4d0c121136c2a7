package slot

import (
	"aead.dev/minisign"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// FuzzBundleReader: ovrootctl upgrade reads bundles from anywhere (a USB
// stick, a pipe, later the network). Any byte string is refused with an
// error or read to its end; a member is handed out only with the size the
// manifest gives, and bytes whose hash differs end in ErrChecksum. The
// manifest a reader returns has passed Check. Never a panic.
func FuzzBundleReader(f *testing.F) {
	root := bytes.Repeat([]byte("squashfs"), 700)
	f.Add(fuzzBundle(f, root))
	bad := fuzzBundle(f, root)
	bad[len(bad)/2] ^= 1
	f.Add(bad)
	f.Add([]byte("hello"))
	f.Add(fuzzBundle(f, root)[:1500])
	whole := fuzzBundle(f, root)
	f.Add(whole[:len(whole)/2]) // cut inside the root
	f.Add(fuzzBundleKey(f, root, nil))
	pub, _ := testKeyPair(f, 1)
	// Unsigned bundles are allowed here so that mutated manifests reach
	// the JSON and member checks; a signature that is there must verify.
	trust := Trust{Keys: []Key{pub}, AllowUnsigned: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), trust)
		if err != nil {
			return
		}
		if err := r.Manifest.Check(); err != nil {
			t.Fatalf("NewReader accepted a manifest Check refuses: %v", err)
		}
		for {
			file, body, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				return
			}
			n, err := io.Copy(io.Discard, body)
			if err != nil {
				if !errors.Is(err, ErrChecksum) && !strings.Contains(err.Error(), file.Name) {
					t.Fatalf("reading member %s: error %q does not name the member", file.Name, err)
				}
				return
			}
			if n != file.Size {
				t.Fatalf("member %s: read %d bytes whose hash matched, the manifest says %d", file.Name, n, file.Size)
			}
		}
	})
}

// fuzzBundle is a whole bundle with root as its root, signed by test key 1.
func fuzzBundle(f *testing.F, root []byte) []byte {
	_, key := testKeyPair(f, 1)
	return fuzzBundleKey(f, root, &key)
}

// fuzzBundleKey is a bundle signed by key (unsigned when nil).
func fuzzBundleKey(f *testing.F, root []byte, key *minisign.PrivateKey) []byte {
	var buf bytes.Buffer
	src := func(name string, b []byte) Source {
		return Source{Name: name, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
	}
	m := Manifest{Arch: layout.ARM64, Board: "generic", Loader: layout.LoaderUEFI, Cmdline: "console=ttyAMA0", Tries: 3, Version: "1.2"}
	if err := WriteBundle(&buf, m, []Source{src(RootName, root), src(layout.KernelFile, []byte("kernel")), src(layout.InitrdFile, []byte("initrd"))}, key); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzParseEnv: the U-Boot entry format. What ParseEnv accepts names a
// valid slot and tries within range, and Env writes it back to a text
// that parses to the same entry (a device rewrites entries it read).
func FuzzParseEnv(f *testing.F) {
	e := Entry{Slot: layout.SlotB, Generation: 7, BuildID: "bbbbbbbbbbbbbbbb", Options: "console=ttyAMA0 quiet", Loader: layout.LoaderUBoot, Release: "6.1.0"}
	f.Add(e.Env(3))
	f.Add(e.Env(0))
	f.Add(e.Env(3)[:40])
	f.Add("ovroot_ok=1\novroot_gen=0x1\novroot_tries=0x0\novroot_args=ovroot.slot=a\novroot_slot=a\n")
	f.Fuzz(func(t *testing.T, text string) {
		got, tries, err := ParseEnv(text)
		if err != nil {
			return
		}
		if !got.Slot.Valid() || tries < 0 || tries > MaxTries || got.Generation < 0 {
			t.Fatalf("ParseEnv(%q) = %+v, tries %d", text, got, tries)
		}
		if strings.ContainsAny(got.Options+got.Release+got.BuildID, "\n") {
			return // a value with a newline cannot come from Env
		}
		again, tries2, err := ParseEnv(got.Env(tries))
		if err != nil || tries2 != tries || again.KernelCmdline() != got.KernelCmdline() || again.Generation != got.Generation {
			t.Fatalf("ParseEnv(Env(%+v)) = %+v, %d, %v", got, again, tries2, err)
		}
	})
}

// FuzzParseEvents: the slot log is appended line by line and a power cut
// can tear its last line. Any bytes give only events with a slot and an
// event; a log cut anywhere gives a prefix of the whole log's events, with
// at least every line that was whole.
func FuzzParseEvents(f *testing.F) {
	f.Add([]byte(`{"time":"2026-12-03T10:00:00Z","slot":"b","build_id":"0185525636fa2ecc","event":"trial-failed","reason":"no tries left"}`+"\n"), uint16(40))
	f.Add([]byte("garbage\n{\"slot\":\"c\",\"event\":\"x\"}\n"), uint16(0))
	whole := []layout.SlotEvent{
		{Slot: layout.SlotA, Event: "upgraded", BuildID: "aaaaaaaaaaaaaaaa"},
		{Slot: layout.SlotB, Event: "health-failed", Reason: "check \"net\" exited 1"},
		{Slot: layout.SlotB, Event: "confirmed"},
	}
	var log []byte
	for _, ev := range whole {
		line, _ := json.Marshal(ev)
		log = append(append(log, line...), '\n')
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		for _, ev := range ParseEvents(data) {
			if !ev.Slot.Valid() || ev.Event == "" {
				t.Fatalf("event %+v", ev)
			}
		}
		// The fuzzed bytes are a torn line before a whole log: the
		// whole log's events all come through.
		got := ParseEvents(append(append(bytes.Clone(data), '\n'), log...))
		if len(got) < len(whole) || !reflect.DeepEqual(got[len(got)-len(whole):], whole) {
			t.Fatalf("after %q the log's events are %+v", data, got)
		}
		n := int(cut) % (len(log) + 1)
		part := ParseEvents(log[:n])
		lines := bytes.Count(log[:n], []byte("\n"))
		if len(part) < lines || len(part) > len(whole) || (len(part) > 0 && !reflect.DeepEqual(part, whole[:len(part)])) {
			t.Fatalf("log cut at %d: %+v", n, part)
		}
	})
}

// FuzzParseEntryName: systemd-boot's counted entry names are renamed by
// the loader, the init's confirmer and ovrootctl. A name that parses
// names a slot, and the name made from it parses to the same thing.
func FuzzParseEntryName(f *testing.F) {
	for _, s := range []string{"ovroot-a.conf", "ovroot-b+3.conf", "ovroot-b+1-2.conf", "ovroot-b+0-3.conf", "ovroot-c.conf", "ovroot-a+.conf", "ovroot-a+999999999.conf", "other.conf"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := ParseName(s)
		if !ok {
			return
		}
		if !n.Slot.Valid() || n.Left < 0 || n.Done < 0 || (!n.Counted && (n.Left != 0 || n.Done != 0)) {
			t.Fatalf("ParseName(%q) = %+v", s, n)
		}
		again, ok := ParseName(n.FileName())
		if !ok || again != n {
			t.Fatalf("ParseName(%q) = %+v; its FileName %q parses to %+v, %v", s, n, n.FileName(), again, ok)
		}
	})
}

// FuzzParseEntry: a boot entry on the ESP (written by us, or edited by
// hand) parses to a slot, and Text of what parsed reads back the same.
func FuzzParseEntry(f *testing.F) {
	e := Entry{Slot: layout.SlotB, Generation: 7, BuildID: "bbbbbbbbbbbbbbbb", Options: "console=ttyS0 quiet", Loader: layout.LoaderUEFI, Release: "6.1.0"}
	f.Add(e.Text())
	e.Options = "panic=-1 console=ttyS0"
	f.Add(e.Text())
	f.Add("version 1\noptions ovroot.slot=a ovroot.slot=b panic=5\n")
	f.Fuzz(func(t *testing.T, text string) {
		got, err := ParseEntry(text)
		if err != nil {
			return
		}
		if !got.Slot.Valid() {
			t.Fatalf("ParseEntry(%q) = %+v", text, got)
		}
		again, err := ParseEntry(got.Text())
		if err != nil || again.Slot != got.Slot || again.Generation != got.Generation || again.BuildID != got.BuildID || again.KernelCmdline() != got.KernelCmdline() {
			t.Fatalf("ParseEntry(%q) = %+v; its Text reads back as %+v, %v", text, got, again, err)
		}
	})
}
