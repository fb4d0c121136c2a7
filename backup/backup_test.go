package backup

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/internal/testenv"
	"golang.org/x/sys/unix"
)

// got is one tar entry as read back.
type got struct {
	typ           byte
	mode          int64
	uid, gid      int
	link, content string
	xattrs        map[string]string
	mtime         time.Time
}

var epoch = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// MakeUpper builds an overlayfs upper in a temp dir as the kernel leaves
// it: a changed file, an added one with an xattr and an owner, a whiteout,
// two whiteouts sharing one inode (overlayfs >= 5.8 links them), an opaque
// directory, a hard link, a symlink, and overlayfs's own xattrs.
func makeUpper(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t, "an upper's whiteouts are char devices 0/0 and its opaque mark a trusted.* xattr")
	up := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(rel, content string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(up, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, []byte(content), mode))
		must(unix.Chmod(p, uint32(mode)))
	}
	file("etc/hostname", "mine\n", 0o644)
	file("etc/app.conf", "secret\n", 0o640)
	must(os.Chown(filepath.Join(up, "etc/app.conf"), 1000, 1001))
	if err := unix.Lsetxattr(filepath.Join(up, "etc/app.conf"), "user.comment", []byte("kept"), 0); err != nil {
		testenv.Missing(t, "user.* xattrs in "+up+": "+err.Error())
	}
	must(unix.Lsetxattr(filepath.Join(up, "etc/hostname"), "trusted.overlay.origin", []byte{0, 1, 2}, 0))
	must(unix.Mknod(filepath.Join(up, "etc/motd"), unix.S_IFCHR|0, 0))
	must(unix.Mknod(filepath.Join(up, "etc/issue"), unix.S_IFCHR|0, 0))
	must(os.Link(filepath.Join(up, "etc/issue"), filepath.Join(up, "etc/issue.net")))
	file("usr/share/doc/mine.txt", "doc", 0o644)
	must(unix.Lsetxattr(filepath.Join(up, "usr/share/doc"), "trusted.overlay.opaque", []byte("y"), 0))
	file("usr/bin/tool", "#!/bin/sh\n", 0o4755)
	must(os.Link(filepath.Join(up, "usr/bin/tool"), filepath.Join(up, "usr/bin/tool2")))
	must(os.Symlink("/usr/share/zoneinfo/UTC", filepath.Join(up, "etc/localtime")))
	// Times last: creating entries touches their directories.
	for _, rel := range []string{"etc/hostname", "etc/app.conf", "usr/share/doc/mine.txt", "usr/bin/tool", "usr/share/doc", "usr/share", "usr/bin", "usr", "etc"} {
		must(os.Chtimes(filepath.Join(up, rel), epoch, epoch))
	}
	must(unix.Lutimes(filepath.Join(up, "etc/localtime"), []unix.Timeval{unix.NsecToTimeval(epoch.UnixNano()), unix.NsecToTimeval(epoch.UnixNano())}))
	return up
}

func readLayer(t *testing.T, r io.Reader) ([]string, map[string]got) {
	t.Helper()
	tr := tar.NewReader(r)
	var order []string
	m := map[string]got{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return order, m
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		g := got{typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid, link: h.Linkname, content: string(b)}
		for k, v := range h.PAXRecords {
			if n, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if g.xattrs == nil {
					g.xattrs = map[string]string{}
				}
				g.xattrs[n] = v
			}
		}
		if h.Typeflag != tar.TypeLink && !strings.Contains(h.Name, WhiteoutPrefix) && h.Name != "etc/issue" {
			g.mtime = h.ModTime.UTC()
		}
		order = append(order, h.Name)
		m[h.Name] = g
	}
}

func TestWriteFile(t *testing.T) {
	up := makeUpper(t)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "b.tar")
			if err := WriteFile(up, out, Options{Gzip: gz}); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var r io.Reader = f
			if gz {
				if r, err = gzip.NewReader(f); err != nil {
					t.Fatalf("not gzip: %v", err)
				}
			}
			order, m := readLayer(t, r)
			wantOrder := []string{
				"etc/", "etc/app.conf", "etc/hostname", "etc/.wh.issue", "etc/.wh.issue.net", "etc/localtime", "etc/.wh.motd",
				"usr/", "usr/bin/", "usr/bin/tool", "usr/bin/tool2", "usr/share/", "usr/share/doc/", "usr/share/doc/" + WhiteoutOpaque, "usr/share/doc/mine.txt",
			}
			if !reflect.DeepEqual(order, wantOrder) {
				t.Errorf("entries:\n%q\nwant\n%q", order, wantOrder)
			}
			wo := got{typ: tar.TypeReg, mode: 0o600}
			want := map[string]got{
				"etc/":                            {typ: tar.TypeDir, mode: 0o755, mtime: epoch},
				"etc/app.conf":                    {typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1001, content: "secret\n", xattrs: map[string]string{"user.comment": "kept"}, mtime: epoch},
				"etc/hostname":                    {typ: tar.TypeReg, mode: 0o644, content: "mine\n", mtime: epoch}, // trusted.overlay.origin left out
				"etc/.wh.issue":                   wo,
				"etc/.wh.issue.net":               wo, // a shared whiteout inode is not a hard link of the layer
				"etc/.wh.motd":                    wo,
				"etc/localtime":                   {typ: tar.TypeSymlink, mode: 0o777, link: "/usr/share/zoneinfo/UTC", mtime: epoch},
				"usr/":                            {typ: tar.TypeDir, mode: 0o755, mtime: epoch},
				"usr/bin/":                        {typ: tar.TypeDir, mode: 0o755, mtime: epoch},
				"usr/bin/tool":                    {typ: tar.TypeReg, mode: 0o4755, content: "#!/bin/sh\n", mtime: epoch},
				"usr/bin/tool2":                   {typ: tar.TypeLink, mode: 0o4755, link: "usr/bin/tool"},
				"usr/share/":                      {typ: tar.TypeDir, mode: 0o755, mtime: epoch},
				"usr/share/doc/":                  {typ: tar.TypeDir, mode: 0o755, mtime: epoch}, // trusted.overlay.opaque left out
				"usr/share/doc/" + WhiteoutOpaque: wo,
				"usr/share/doc/mine.txt":          {typ: tar.TypeReg, mode: 0o644, content: "doc", mtime: epoch},
			}
			for name, w := range want {
				if g := m[name]; !reflect.DeepEqual(g, w) {
					t.Errorf("entry %s = %+v, want %+v", name, g, w)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*.tmp")); len(left) > 0 {
				t.Errorf("temporary files left behind: %q", left)
			}
		})
	}
}

// A file that changes after it was copied is copied again; one that
// changes at every attempt fails the backup, naming it, and leaves no file.
func TestWriteFileChanging(t *testing.T) {
	up := t.TempDir()
	for _, rel := range []string{"etc/a", "etc/busy", "etc/z"} {
		os.MkdirAll(filepath.Join(up, filepath.Dir(rel)), 0o755)
		if err := os.WriteFile(filepath.Join(up, rel), []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		changes int // attempts during which etc/busy is written
		wantErr bool
	}{
		{"once", 1, false},
		{"always", Attempts, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "b.tar")
			n, attempts := 0, 0
			o := Options{afterEntry: func(rel string) {
				if rel == "etc" {
					attempts++
				}
				if rel == "etc/busy" && n < tc.changes {
					n++
					f, err := os.OpenFile(filepath.Join(up, rel), os.O_APPEND|os.O_WRONLY, 0)
					if err != nil {
						t.Fatal(err)
					}
					f.WriteString("more")
					f.Close()
				}
			}}
			err := WriteFile(up, out, o)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "/etc/busy") || !strings.Contains(err.Error(), "kept changing") {
					t.Errorf("WriteFile of an upper that keeps changing = %v, want an error naming /etc/busy", err)
				}
				if _, serr := os.Stat(out); serr == nil {
					t.Errorf("%s written although the copy never held still", out)
				}
				if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*.tmp")); len(left) > 0 {
					t.Errorf("temporary files left behind: %q", left)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if attempts != 2 {
				t.Errorf("%d attempts, want 2 (one changed, one clean)", attempts)
			}
			f, _ := os.Open(out)
			defer f.Close()
			_, m := readLayer(t, f)
			if c := m["etc/busy"].content; c != "1more" {
				t.Errorf("etc/busy in the backup = %q, want the content after the change %q", c, "1more")
			}
		})
	}
}

// A backup written into the upper it copies leaves itself out.
func TestWriteFileInsideUpper(t *testing.T) {
	up := t.TempDir()
	os.MkdirAll(filepath.Join(up, "root"), 0o700)
	os.WriteFile(filepath.Join(up, "root/keep"), []byte("x"), 0o644)
	out := filepath.Join(up, "root/b.tar")
	if err := WriteFile(up, out, Options{}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(out)
	defer f.Close()
	order, _ := readLayer(t, f)
	if want := []string{"root/", "root/keep"}; !reflect.DeepEqual(order, want) {
		t.Errorf("entries = %q, want %q (the backup itself left out)", order, want)
	}
}

// A file whose name a layer reader would take for a whiteout is refused,
// naming it, rather than turned into a deletion on restore.
func TestWriteRefusesWhiteoutNames(t *testing.T) {
	up := t.TempDir()
	os.MkdirAll(filepath.Join(up, "etc"), 0o755)
	os.WriteFile(filepath.Join(up, "etc/.wh.passwd"), []byte("x"), 0o644)
	err := Write(io.Discard, up, Options{})
	if err == nil || !strings.Contains(err.Error(), "/etc/.wh.passwd") {
		t.Errorf("Write of an upper holding etc/.wh.passwd = %v, want an error naming it", err)
	}
}

// An upper written with redirect_dir or metacopy is refused, naming the path.
func TestWriteRefusesRedirect(t *testing.T) {
	testenv.RequireRoot(t, "trusted.overlay.redirect is a trusted.* xattr")
	up := t.TempDir()
	os.MkdirAll(filepath.Join(up, "moved"), 0o755)
	if err := unix.Lsetxattr(filepath.Join(up, "moved"), "trusted.overlay.redirect", []byte("/orig"), 0); err != nil {
		t.Fatal(err)
	}
	err := Write(io.Discard, up, Options{})
	if err == nil || !strings.Contains(err.Error(), "/moved") || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("Write of an upper with a redirect = %v, want an error naming /moved and the redirect", err)
	}
}

// A stream written into the upper it copies (ovrootctl backup -o - >
// /root/b.tar on the device) sees itself grow: the copy fails as changed.
func TestWriteStreamIntoUpper(t *testing.T) {
	up := t.TempDir()
	os.MkdirAll(filepath.Join(up, "root"), 0o700)
	f, err := os.Create(filepath.Join(up, "root/b.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = Write(f, up, Options{})
	var ch *ChangedError
	if !errors.As(err, &ch) || ch.Path != "/root/b.tar" {
		t.Errorf("Write into a file of the upper = %v, want a ChangedError for /root/b.tar", err)
	}
}
