package boot

import (
	"bytes"
	"reflect"
	"testing"
)

// ovroot.trace marks the end of every step of a persistent boot, in
// order (make bench's hand-over timeline is drawn from them); without it
// there is none.
func TestBootTrace(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    []string
	}{
		{"console=ttyS0 ovroot.trace", []string{"start", "config", "modules", "inputs", "devices", "gpt", "root", "data", "overlay", "upkeep", "move", "state", "logs"}},
		{"console=ttyS0", nil},
	} {
		e := &bootEnv{cmdline: tc.cmdline, sys: &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}}}
		if _, err := e.run(t); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range e.traces {
			got = append(got, l[len("trace: "):])
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: trace marks %q, want %q", tc.cmdline, got, tc.want)
		}
	}
}

// Trace lines go to the kernel log only, at debug level, so the kernel
// never echoes them to a slow serial console.
func TestLoggerTracef(t *testing.T) {
	var console, kmsg bytes.Buffer
	l := NewLogger(&console)
	l.Tracef("trace: %s", "early") // before kmsg: dropped
	l.AttachKmsg(&kmsg, "7 4 1 7")
	l.Tracef("trace: %s", "modules")
	if console.Len() != 0 {
		t.Errorf("trace lines on the console: %q", console.String())
	}
	if got, want := kmsg.String(), "<7>ovroot: trace: modules\n"; got != want {
		t.Errorf("kmsg got %q, want %q", got, want)
	}
}
