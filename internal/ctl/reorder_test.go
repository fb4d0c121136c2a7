package ctl

import (
	"flag"
	"io"
	"slices"
	"testing"
	"time"
)

// Flags may follow the bundle, and a flag with a value may give it after
// a space or an "=": the value stays with its flag.
func TestReorder(t *testing.T) {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Bool("reboot", false, "")
	fs.Duration("stall", time.Second, "")
	fs.String("progress", "text", "")
	for _, c := range []struct{ in, want []string }{
		{[]string{"/dev/vdb", "--reboot"}, []string{"--reboot", "--", "/dev/vdb"}},
		{[]string{"--stall", "2s", "--retries=1", "URL"}, []string{"--stall", "2s", "--retries=1", "--", "URL"}},
		{[]string{"URL", "--progress", "json", "--reboot"}, []string{"--progress", "json", "--reboot", "--", "URL"}},
		{[]string{"--progress=json", "URL"}, []string{"--progress=json", "--", "URL"}},
		{[]string{"--reboot", "--", "-odd-name"}, []string{"--reboot", "--", "-odd-name"}},
		{[]string{"--reboot"}, []string{"--reboot"}},
	} {
		if got := reorder(fs, c.in); !slices.Equal(got, c.want) {
			t.Errorf("reorder(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
