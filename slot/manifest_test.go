package slot

import (
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// goodManifest is a manifest Check accepts; each case of
// TestManifestCheckRefuses spoils one field of it.
func goodManifest() Manifest {
	root := strings.Repeat("ab", 32)
	sum := make([]byte, 32)
	for i := range sum {
		sum[i] = 0xab
	}
	return Manifest{
		Format: BundleFormat, Arch: layout.X86_64, Loader: layout.LoaderUEFI, Tries: 3, Version: "1.2.3",
		BuildID: BuildID(sum),
		Files: []File{
			{Name: RootName, Size: 4096, SHA256: root},
			{Name: layout.KernelFile, Size: 100, SHA256: strings.Repeat("cd", 32)},
			{Name: layout.InitrdFile, Size: 200, SHA256: strings.Repeat("ef", 32)},
		},
	}
}

// Every refusal of Manifest.Check, each naming what is wrong: a device
// must not act on a bundle of a format, arch, loader or member list it
// does not know, nor on a build id that is not its root's.
func TestManifestCheckRefuses(t *testing.T) {
	if err := goodManifest().Check(); err != nil {
		t.Fatalf("good manifest: Check() = %v", err)
	}
	cases := []struct {
		name  string
		spoil func(m *Manifest)
		want  string
	}{
		{"format 0", func(m *Manifest) { m.Format = 0 }, "bundle format 0, this ovrootctl reads format 2"},
		{"format 1 (unsigned, before versions)", func(m *Manifest) { m.Format = 1 }, "bundle format 1 was made by an ovroot before signed, versioned bundles: rebuild it"},
		{"newer format", func(m *Manifest) { m.Format = BundleFormat + 1 }, "bundle format 3"},
		{"no version", func(m *Manifest) { m.Version = "" }, "bundle version: empty version"},
		{"version not numbers", func(m *Manifest) { m.Version = "v1.2" }, `bundle version: version "v1.2": "v1" is not a number`},
		{"unknown arch", func(m *Manifest) { m.Arch = "mips" }, `unknown arch "mips"`},
		{"no arch", func(m *Manifest) { m.Arch = "" }, `unknown arch ""`},
		{"unknown loader", func(m *Manifest) { m.Loader = "grub" }, "grub"},
		{"no tries", func(m *Manifest) { m.Tries = 0 }, "gives 0 trial boots (want 1 to 99)"},
		{"too many tries", func(m *Manifest) { m.Tries = 100 }, "gives 100 trial boots"},
		{"no files", func(m *Manifest) { m.Files = nil }, "lists 0 files, want [root.squashfs vmlinuz initrd.img]"},
		{"extra file", func(m *Manifest) {
			m.Files = append(m.Files, File{Name: "x", Size: 1, SHA256: strings.Repeat("00", 32)})
		}, "lists 4 files"},
		{"files out of order", func(m *Manifest) { m.Files[1], m.Files[2] = m.Files[2], m.Files[1] }, `file 2 is "initrd.img", want "vmlinuz"`},
		{"unknown member", func(m *Manifest) { m.Files[2].Name = "../../etc/passwd" }, `file 3 is "../../etc/passwd", want "initrd.img"`},
		{"empty member", func(m *Manifest) { m.Files[1].Size = 0 }, "bundle file vmlinuz has size 0"},
		{"negative size", func(m *Manifest) { m.Files[0].Size = -1 }, "bundle file root.squashfs has size -1"},
		{"sha256 not hex", func(m *Manifest) { m.Files[2].SHA256 = strings.Repeat("zz", 32) }, "bundle file initrd.img: sha256"},
		{"sha256 short", func(m *Manifest) { m.Files[1].SHA256 = "abcd" }, `bundle file vmlinuz: sha256 "abcd" is not a SHA-256`},
		{"build id of another root", func(m *Manifest) { m.BuildID = "0000000000000000" }, `build id "0000000000000000" does not match its root (abababababababab)`},
		{"root changed under the build id", func(m *Manifest) { m.Files[0].SHA256 = strings.Repeat("ac", 32) }, "does not match its root (acacacacacacacac)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := goodManifest()
			c.spoil(&m)
			err := m.Check()
			if err == nil {
				t.Fatalf("Check(%+v) = nil, want an error containing %q", m, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("Check() = %q, want it to contain %q", err, c.want)
			}
		})
	}
}
