package ctl

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/reset"
	"golang.org/x/sys/unix"
)

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		name      string
		state     string            // "" = no state file
		mountinfo string            // /proc/self/mountinfo; "" = none
		sysfs     map[string]string // files of /sys/fs/ext4/vda3
		want      []string
		wantErr   string
	}{
		{
			name:  "persistent",
			state: `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","formatted":true,"timings_ms":{"total":812,"modules":100,"devices":20,"mounts":300}}`,
			want:  []string{"PERSISTENT\n", "root:      /dev/vda2 on /rom", "first boot: the data partition was blank", "root ready in 812 ms (modules 100 ms, devices 20 ms, mounts 300 ms)"},
		},
		{
			name:  "stacked layers",
			state: `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","layers":[{"name":"base","device":"/dev/dm-0","offset":0,"size":4096},{"name":"app","device":"/dev/dm-1","offset":4096,"size":4096}],"timings_ms":{}}`,
			want:  []string{"layers:    app, base (top first; each read-only at /run/ovroot/layers/NAME, stacked on /rom)\n"},
		},
		{
			name:  "volatile",
			state: `{"mode":"volatile","reason":"no partition labelled rootfs_data","root_device":"/dev/vda2","timings_ms":{}}`,
			want:  []string{"VOLATILE: no partition labelled rootfs_data\n", "lost at power-off"},
		},
		{
			name:  "full data partition",
			state: `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","data_full":true,"reserve_released":true,"timings_ms":{}}`,
			want:  []string{"PERSISTENT, data partition FULL\n", "the 1024 KiB reserve was used up"},
		},
		{
			name:  "full data partition, no reserve left",
			state: `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","data_full":true,"timings_ms":{}}`,
			want:  []string{"PERSISTENT, data partition FULL\n", "no reserve was left"},
		},
		{
			name:      "data partition failed since the boot",
			state:     `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","timings_ms":{}}`,
			mountinfo: "22 1 0:20 / / rw,relatime - overlay overlay rw,lowerdir=/rom\n30 22 254:3 / /overlay rw,noatime - ext4 /dev/vda3 ro\n",
			want:      []string{"PERSISTENT at boot, data partition FAILING since: the kernel made the ext4 on /dev/vda3 read-only after an error", "writes to the root may fail"},
		},
		{
			name:  "ext4 errors since the boot",
			state: `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","data_errors_at_boot":2,"timings_ms":{}}`,
			sysfs: map[string]string{"errors_count": "5\n", "last_error_func": "ext4_journal_check_start\n", "last_error_errcode": "8\n"},
			want:  []string{"PERSISTENT at boot, data partition FAILING since: the kernel's ext4 on /dev/vda3 reported 3 error(s) since the boot, the last in ext4_journal_check_start (EROFS: the journal was aborted)\n"},
		},
		{
			name:  "ext4 errors from earlier boots only",
			state: `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","data_errors_at_boot":2,"timings_ms":{}}`,
			sysfs: map[string]string{"errors_count": "2\n", "last_error_func": "ext4_lookup\n"},
			want:  []string{"PERSISTENT\n"},
		},
		{
			name:      "data partition still writable",
			state:     `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","timings_ms":{}}`,
			mountinfo: "30 22 254:3 / /overlay rw,noatime - ext4 /dev/vda3 rw\n",
			want:      []string{"PERSISTENT\n"},
		},
		{name: "no record", wantErr: "was this system booted by ovroot's init?"},
		{name: "garbage", state: "{", wantErr: "parse /run/ovroot/state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.state != "" {
				p := filepath.Join(root, layout.StateFile)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(tc.state), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for name, v := range tc.sysfs {
				p := filepath.Join(root, "sys/fs/ext4/vda3", name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.mountinfo != "" {
				p := filepath.Join(root, "proc/self/mountinfo")
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(tc.mountinfo), 0o644); err != nil {
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
	mk(filepath.Join(lower, "usr/share/doc/factory.txt"), "factory doc")
	mk(filepath.Join(upper, "etc/hostname"), "mine")
	mk(filepath.Join(upper, "root/.ssh/authorized_keys"), "key")
	mk(filepath.Join(upper, "etc/new.conf"), "x")
	// A whiteout is a character device 0/0, which Linux >= 5.8 lets any
	// user make (it is what overlayfs makes for an unprivileged mount).
	if err := mknodWhiteout(filepath.Join(upper, "etc/motd")); err != nil {
		testenv.Missing(t, "cannot make a whiteout (char 0/0) here: "+err.Error())
	}
	// An opaque directory, marked as an unprivileged overlay mount
	// (userxattr) marks it: replaced, and nothing below it listed.
	mk(filepath.Join(upper, "usr/share/doc/mine.txt"), "mine")
	if err := unix.Setxattr(filepath.Join(upper, "usr/share/doc"), "user.overlay.opaque", []byte("y"), 0); err != nil {
		testenv.Missing(t, "cannot set user.* xattrs in "+root+": "+err.Error())
	}
	got, err := Changes(upper, lower)
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{"/etc/hostname", "modified"}, {"/etc/motd", "deleted"}, {"/etc/new.conf", "added"},
		{"/root", "added"}, {"/usr/share/doc", "replaced"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Changes() = %v, want %v", got, want)
	}
}

// The opaque mark of a privileged overlay mount (trusted.overlay.opaque),
// which is what the init's overlay writes.
func TestChangesTrustedOpaque(t *testing.T) {
	testenv.RequireRoot(t, "trusted.overlay.opaque is a trusted.* xattr")
	root := t.TempDir()
	lower, upper := filepath.Join(root, "rom"), filepath.Join(root, "upper")
	for _, p := range []string{filepath.Join(lower, "etc/config/network"), filepath.Join(upper, "etc/config/mine")} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Setxattr(filepath.Join(upper, "etc/config"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatalf("set trusted.overlay.opaque as root: %v", err)
	}
	got, err := Changes(upper, lower)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Change{{"/etc/config", "replaced"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Changes() = %v, want %v", got, want)
	}
}

// In failsafe mode the running upper is in RAM, not on the (read-only)
// data partition: changes reports the running system.
func TestChangesFailsafe(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("rom/etc/hostname")
	mk("overlay/upper/etc/on-the-data-partition")
	mk("run/ovroot/failsafe/upper/etc/written-in-failsafe")
	for _, tc := range []struct{ state, want string }{
		{`{"mode":"failsafe","reason":"f pressed on the console","timings_ms":{}}`, "A /etc/written-in-failsafe\n"},
		{`{"mode":"persistent","timings_ms":{}}`, "A /etc/on-the-data-partition\n"},
	} {
		writeState(t, root, tc.state)
		var out bytes.Buffer
		if err := (Context{Stdout: &out, Stderr: io.Discard, Args: []string{"changes"}, Root: root}).Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Errorf("changes with state %s = %q, want %q", tc.state, out.String(), tc.want)
		}
	}
}

func writeState(t *testing.T, root, state string) {
	t.Helper()
	p := filepath.Join(root, layout.StateFile)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(state), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFactoryReset(t *testing.T) {
	root := t.TempDir()
	writeState(t, root, `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","timings_ms":{}}`)
	os.MkdirAll(filepath.Join(root, "overlay/upper"), 0o755)
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	rebooted := false
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := Context{Stdout: &out, Stderr: &out, Args: args, Root: root, Now: func() time.Time { return now },
			Reboot: func() error { rebooted = true; return nil }}.Execute(context.Background())
		return out.String(), err
	}
	out, err := run("status")
	if err != nil || strings.Contains(out, "PENDING") {
		t.Fatalf("status before: %v\n%s", err, out)
	}
	if out, err = run("factory-reset"); err != nil || !strings.Contains(out, "factory reset scheduled") || rebooted {
		t.Fatalf("factory-reset: %v (rebooted %v)\n%s", err, rebooted, out)
	}
	if p, _ := reset.Pending(filepath.Join(root, "overlay")); p == nil || p.Trigger != reset.TriggerCtl || !p.Time.Equal(now) {
		t.Errorf("request = %+v", p)
	}
	out, _ = run("status")
	if !strings.Contains(out, "PENDING factory reset (trigger=ovrootctl, requested 2026-11-23T10:00:00Z)") {
		t.Errorf("status lacks the pending reset:\n%s", out)
	}
	out, _ = run("status", "--json")
	if !strings.Contains(out, `"reset_pending":{"trigger":"ovrootctl"`) || !strings.Contains(out, `"mode":"persistent"`) {
		t.Errorf("status --json: %s", out)
	}
	if out, err = run("factory-reset", "--cancel"); err != nil || !strings.Contains(out, "factory reset cancelled") {
		t.Errorf("cancel: %v %s", err, out)
	}
	if out, _ = run("status"); strings.Contains(out, "PENDING") {
		t.Errorf("still pending after cancel:\n%s", out)
	}
	if out, _ = run("factory-reset", "--cancel"); !strings.Contains(out, "no factory reset was pending") {
		t.Errorf("second cancel: %s", out)
	}
	if _, err = run("factory-reset", "--reboot"); err != nil || !rebooted {
		t.Errorf("--reboot: %v, rebooted %v", err, rebooted)
	}

	// The record of a reset the init performed.
	os.WriteFile(filepath.Join(root, "overlay", layout.MetaDir, layout.LastResetFile),
		[]byte(`{"trigger":"button","done_at":"2026-11-23T09:00:00Z","kept":["/etc/dropbear"],"duration_ms":12}`), 0o600)
	if out, _ = run("status"); !strings.Contains(out, "last reset: 2026-11-23T09:00:00Z (trigger=button, kept: /etc/dropbear, 12 ms)") {
		t.Errorf("status lacks the last reset:\n%s", out)
	}
}

func TestFactoryResetVolatile(t *testing.T) {
	root := t.TempDir()
	writeState(t, root, `{"mode":"volatile","reason":"no partition labelled rootfs_data","timings_ms":{}}`)
	err := Context{Stdout: io.Discard, Stderr: io.Discard, Args: []string{"factory-reset"}, Root: root}.Execute(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not in use (VOLATILE: no partition labelled rootfs_data)") {
		t.Errorf("error = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "overlay", layout.MetaDir)); err == nil {
		t.Error("a request was written to the tmpfs upper")
	}
}

// The text form is docker diff's short form: one letter, a space, the path.
func TestChangeLetter(t *testing.T) {
	for _, tc := range []struct{ kind, want string }{
		{"added", "A"}, {"modified", "C"}, {"replaced", "C"}, {"deleted", "D"},
	} {
		if got := (Change{Path: "/x", Kind: tc.kind}).Letter(); got != tc.want {
			t.Errorf("Change{Kind: %q}.Letter() = %q, want %q", tc.kind, got, tc.want)
		}
	}
}

// backup -o writes the running upper as a layer tarball (gzip by the
// name), and -o - streams it to stdout.
func TestBackup(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "overlay/upper/etc/new.conf")
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeState(t, root, `{"mode":"persistent","timings_ms":{}}`)
	names := func(r io.Reader) []string {
		t.Helper()
		var out []string
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, h.Name)
		}
	}
	want := []string{"etc/", "etc/new.conf"}
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	if err := (Context{Stdout: io.Discard, Stderr: io.Discard, Args: []string{"backup", "-o", out}, Root: root}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s is not gzip: %v", out, err)
	}
	if got := names(zr); !reflect.DeepEqual(got, want) {
		t.Errorf("backup -o %s: entries %q, want %q", out, got, want)
	}
	var stdout bytes.Buffer
	if err := (Context{Stdout: &stdout, Stderr: io.Discard, Args: []string{"backup", "-o", "-"}, Root: root}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := names(&stdout); !reflect.DeepEqual(got, want) {
		t.Errorf("backup -o -: entries %q, want %q", got, want)
	}
	if err := (Context{Stdout: io.Discard, Stderr: io.Discard, Args: []string{"backup"}, Root: root}).Execute(context.Background()); err == nil {
		t.Error("backup without -o succeeded")
	}
}

// An output in the running root (an overlay) would be written into the
// upper being copied: refused, naming it.
func TestBackupRefusesTheRunningRoot(t *testing.T) {
	testenv.RequireRoot(t, "mounting an overlay")
	root := t.TempDir()
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	merged := filepath.Join(root, "merged")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", root, root, root)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		testenv.Missing(t, "cannot mount an overlay here: "+err.Error())
	}
	defer unix.Unmount(merged, 0)
	os.MkdirAll(filepath.Join(merged, "overlay/upper"), 0o755)
	out := filepath.Join(merged, "overlay/b.tar")
	err := (Context{Stdout: io.Discard, Stderr: io.Discard, Args: []string{"backup", "-o", out}, Root: merged}).Execute(context.Background())
	if err == nil || !strings.Contains(err.Error(), "in the running root") {
		t.Errorf("backup -o %s (in the overlay root) = %v, want a refusal", out, err)
	}
	if _, serr := os.Stat(out); serr == nil {
		t.Errorf("%s was written", out)
	}
}

// restore FILE checks and stages a backup and says what the next boot
// does; --cancel withdraws it; a bad file changes nothing.
func TestRestore(t *testing.T) {
	root := t.TempDir()
	writeState(t, root, `{"mode":"persistent","root_device":"/dev/vda2","data_device":"/dev/vda3","timings_ms":{}}`)
	os.MkdirAll(filepath.Join(root, "overlay/upper"), 0o755)
	data := filepath.Join(root, "overlay")
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	rebooted := false
	run := func(stdin io.Reader, args ...string) (string, error) {
		var out bytes.Buffer
		err := Context{Stdin: stdin, Stdout: &out, Stderr: &out, Args: args, Root: root, Now: func() time.Time { return now },
			Reboot: func() error { rebooted = true; return nil }}.Execute(context.Background())
		return out.String(), err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "etc/hostname", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5})
	tw.Write([]byte("mine\n"))
	tw.WriteHeader(&tar.Header{Name: "etc/.wh.motd", Typeflag: tar.TypeReg, Mode: 0o600})
	tw.Close()
	file := filepath.Join(t.TempDir(), "router.tar")
	os.WriteFile(file, layer.Bytes(), 0o600)

	for _, bad := range [][]string{{"restore"}, {"restore", "a", "b"}, {"restore", "--cancel", "a"}, {"restore", "--bogus", "a"}} {
		if out, err := run(nil, bad...); err == nil || !strings.Contains(out, "usage: ovrootctl restore") {
			t.Errorf("%q: %v, want the usage:\n%s", bad, err, out)
		}
	}
	out, err := run(nil, "restore", file)
	if err != nil || !strings.Contains(out, "restore staged: "+file+", 3 entries, 5 bytes of file data, copied to /overlay/.ovroot/restore.tar") ||
		!strings.Contains(out, "at the next boot the backup replaces every change") || rebooted {
		t.Fatalf("restore: %v (rebooted %v)\n%s", err, rebooted, out)
	}
	if p, _ := reset.Pending(data); p == nil || p.Trigger != reset.TriggerRestore || p.Restore != layout.RestoreFile || !p.Time.Equal(now) {
		t.Errorf("request = %+v", p)
	}
	if out, _ = run(nil, "status"); !strings.Contains(out, "PENDING restore of a backup (/overlay/.ovroot/restore.tar, requested 2026-11-23T10:00:00Z)") {
		t.Errorf("status lacks the pending restore:\n%s", out)
	}
	if out, err = run(nil, "restore", "--cancel"); err != nil || !strings.Contains(out, "restore cancelled") {
		t.Errorf("cancel: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(data, layout.MetaDir, layout.RestoreFile)); err == nil {
		t.Error("the staged backup is still there after --cancel")
	}
	if out, _ = run(nil, "restore", "--cancel"); !strings.Contains(out, "no restore was pending") {
		t.Errorf("second cancel: %s", out)
	}
	// From stdin, over a pending factory reset, then reboot.
	run(nil, "factory-reset")
	if out, _ = run(nil, "restore", "--cancel"); !strings.Contains(out, "no restore is pending, but a factory reset is") {
		t.Errorf("restore --cancel with a factory reset pending: %s", out)
	}
	if p, _ := reset.Pending(data); p == nil || p.Trigger != reset.TriggerCtl {
		t.Errorf("restore --cancel withdrew the factory reset: %+v", p)
	}
	out, err = run(bytes.NewReader(layer.Bytes()), "restore", "-", "--reboot")
	if err != nil || !strings.Contains(out, "restore staged: stdin, 3 entries") || !strings.Contains(out, "replaces the pending factory reset") || !rebooted {
		t.Errorf("restore - --reboot: %v (rebooted %v)\n%s", err, rebooted, out)
	}
	if out, _ = run(nil, "factory-reset", "--cancel"); !strings.Contains(out, "restore cancelled") {
		t.Errorf("factory-reset --cancel of a restore: %s", out)
	}
	// A bad backup: refused naming the entry, nothing pending.
	var evil bytes.Buffer
	tw = tar.NewWriter(&evil)
	tw.WriteHeader(&tar.Header{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	if _, err = run(bytes.NewReader(evil.Bytes()), "restore", "-"); err == nil || !strings.Contains(err.Error(), `the backup's entry "../x"`) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("restore of a bad layer: %v", err)
	}
	if p, _ := reset.Pending(data); p != nil {
		t.Errorf("a bad layer left a request: %+v", p)
	}
	// The records of restores the init performed or dropped.
	last := filepath.Join(data, layout.MetaDir, layout.LastResetFile)
	os.WriteFile(last, []byte(`{"trigger":"restore","done_at":"2026-11-23T09:00:00Z","restored":true,"duration_ms":40}`), 0o600)
	if out, _ = run(nil, "status"); !strings.Contains(out, "last reset: 2026-11-23T09:00:00Z restored a backup (40 ms)") {
		t.Errorf("status lacks the restore:\n%s", out)
	}
	os.WriteFile(last, []byte(`{"trigger":"restore","done_at":"2026-11-23T09:00:00Z","failed":"the backup is cut short"}`), 0o600)
	if out, _ = run(nil, "status"); !strings.Contains(out, "last reset: 2026-11-23T09:00:00Z FAILED, nothing changed (trigger=restore): the backup is cut short") {
		t.Errorf("status lacks the failed restore:\n%s", out)
	}
}

func TestRestoreVolatile(t *testing.T) {
	root := t.TempDir()
	writeState(t, root, `{"mode":"volatile","reason":"no partition labelled rootfs_data","timings_ms":{}}`)
	err := Context{Stdout: io.Discard, Stderr: io.Discard, Args: []string{"restore", "-"}, Stdin: strings.NewReader(""), Root: root}.Execute(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not in use (VOLATILE") {
		t.Errorf("error = %v", err)
	}
}
