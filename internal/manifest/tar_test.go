package manifest

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"
	"time"
)

type tarEnt struct {
	hdr  tar.Header
	body string
}

func tarOf(t *testing.T, ents []tarEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		h.Format, h.ModTime = tar.FormatPAX, time.Unix(1e9, 0)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		must(t, tw.WriteHeader(&h))
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

const (
	shaA = "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7" // "a\n"
	shaB = "0263829989b6fd954f72baaf2fc64bc2e2f01d692d4de72986ea808f6e99813f" // "b\n"
)

func TestFromTar(t *testing.T) {
	tests := []struct {
		name string
		ents []tarEnt
		want string
	}{{
		name: "implied directories and the root are root's 0755",
		ents: []tarEnt{{hdr: tar.Header{Name: "./etc/motd", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 3, Gid: 4}, body: "a\n"}},
		want: `. dir 0755 0 - owner=0:0 link=- xattrs=-
etc dir 0755 0 - owner=0:0 link=- xattrs=-
etc/motd file 0644 2 ` + shaA + ` owner=3:4 link=- xattrs=-
`,
	}, {
		name: "owners, setuid, symlink, fifo, device, listed root",
		ents: []tarEnt{
			{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1, Gid: 2}},
			{hdr: tar.Header{Name: "/bin/", Typeflag: tar.TypeDir, Mode: 0o751, Uid: 0, Gid: 10}},
			{hdr: tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "b\n"},
			{hdr: tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "su", Uid: 5, Gid: 6, Mode: 0o755}},
			{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
			{hdr: tar.Header{Name: "run/p", Typeflag: tar.TypeFifo, Mode: 0o620, Uid: 1000, Gid: 1000}},
		},
		want: `. dir 0700 0 - owner=1:2 link=- xattrs=-
bin dir 0751 0 - owner=0:10 link=- xattrs=-
bin/sh symlink 0777 0 su owner=5:6 link=- xattrs=-
bin/su file 4755 2 ` + shaB + ` owner=0:0 link=- xattrs=-
dev dir 0755 0 - owner=0:0 link=- xattrs=-
dev/null char 0666 0 - owner=0:0 link=- xattrs=-
run dir 0755 0 - owner=0:0 link=- xattrs=-
run/p fifo 0620 0 - owner=1000:1000 link=- xattrs=-
`,
	}, {
		name: "hard links, a link to a link, grouped by the smallest path",
		ents: []tarEnt{
			{hdr: tar.Header{Name: "z", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 9, Gid: 9}, body: "a\n"},
			{hdr: tar.Header{Name: "m", Typeflag: tar.TypeLink, Linkname: "./z"}},
			{hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "m"}},
			{hdr: tar.Header{Name: "alone", Typeflag: tar.TypeReg, Mode: 0o644}, body: "b\n"},
		},
		want: `. dir 0755 0 - owner=0:0 link=- xattrs=-
alone file 0644 2 ` + shaB + ` owner=0:0 link=- xattrs=-
b file 0600 2 ` + shaA + ` owner=9:9 link=b xattrs=-
m file 0600 2 ` + shaA + ` owner=9:9 link=b xattrs=-
z file 0600 2 ` + shaA + ` owner=9:9 link=b xattrs=-
`,
	}, {
		name: "PAX xattrs, the last entry of a name wins",
		ents: []tarEnt{
			{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, body: "a\n"},
			{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o755, PAXRecords: map[string]string{
				"SCHILY.xattr.user.z":              "1",
				"SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
				"comment":                          "not an xattr",
			}}, body: "b\n"},
		},
		want: `. dir 0755 0 - owner=0:0 link=- xattrs=-
f file 0755 2 ` + shaB + ` owner=0:0 link=- xattrs=security.capability=01000002,user.z=31
`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromTar(bytes.NewReader(tarOf(t, tc.ents)))
			if err != nil {
				t.Fatal(err)
			}
			if g := Text(got); g != tc.want {
				t.Errorf("FromTar text =\n%s\nwant\n%s", g, tc.want)
			}
		})
	}
}

func TestFromTarErrors(t *testing.T) {
	for name, ents := range map[string][]tarEnt{
		"link to nothing":     {{hdr: tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "none"}}},
		"link to a directory": {{hdr: tar.Header{Name: "d", Typeflag: tar.TypeDir, Mode: 0o755}}, {hdr: tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "d"}}},
		"link loop":           {{hdr: tar.Header{Name: "a", Typeflag: tar.TypeLink, Linkname: "b"}}, {hdr: tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"}}},
	} {
		if _, err := FromTar(bytes.NewReader(tarOf(t, ents))); err == nil || !strings.Contains(err.Error(), "hard link") {
			t.Errorf("FromTar(%s) error = %v, want one naming the hard link", name, err)
		}
	}
}
