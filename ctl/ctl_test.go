package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/boot"
)

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		state   string // "" = no state file
		want    []string
		wantErr string
	}{
		{
			name:  "persistent",
			state: `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","formatted":true,"timings_ms":{"total":812,"modules":100,"devices":20,"mounts":300}}`,
			want:  []string{"PERSISTENT\n", "root:      /dev/vda2 on /rom", "first boot: the data partition was blank", "root ready in 812 ms (modules 100 ms, devices 20 ms, mounts 300 ms)"},
		},
		{
			name:  "volatile",
			state: `{"mode":"volatile","reason":"no partition labelled rootfs_data","root_device":"/dev/vda2","timings_ms":{}}`,
			want:  []string{"VOLATILE: no partition labelled rootfs_data\n", "lost at power-off"},
		},
		{name: "no record", wantErr: "was this system booted by ovroot's init?"},
		{name: "garbage", state: "{", wantErr: "parse /run/ovroot/state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.state != "" {
				p := filepath.Join(root, boot.StateFile)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(tc.state), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out, errOut bytes.Buffer
			err := Context{Stdout: &out, Stderr: &errOut, Args: []string{"status"}, Root: root}.Execute(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("status error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("status output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestChanges(t *testing.T) {
	root := t.TempDir()
	lower, upper := filepath.Join(root, "rom"), filepath.Join(root, "upper")
	mk := func(p string, content string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(lower, "etc/hostname"), "factory")
	mk(filepath.Join(lower, "etc/motd"), "hi")
	mk(filepath.Join(upper, "etc/hostname"), "mine")
	mk(filepath.Join(upper, "root/.ssh/authorized_keys"), "key")
	mk(filepath.Join(upper, "etc/new.conf"), "x")
	// A whiteout needs mknod of a char device, which needs root; the case
	// is proven in QEMU, so here it is only checked when we can make one.
	wantDeleted := mknodWhiteout(filepath.Join(upper, "etc/motd")) == nil
	got, err := Changes(upper, lower)
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{{"/etc/hostname", "modified"}}
	if wantDeleted {
		want = append(want, Change{"/etc/motd", "deleted"})
	}
	want = append(want, Change{"/etc/new.conf", "added"}, Change{"/root", "added"})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Changes() = %v, want %v", got, want)
	}
}
