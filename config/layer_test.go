package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const layerHead = "arch = \"x86_64\"\nkernel=\"/k\"\nmodules_dir=\"/m\"\n"

// [[layer]] tables: paths resolved against the file's directory, and
// every mistake named with its line and key.
func TestImageLayers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "image.toml")
	src := layerHead + "\n[[layer]]\nname = \"base\"\nrootfs = \"base.tar\"\n\n[[layer]]\nname = \"app\"\nrootfs = \"/abs/app\"\n"
	os.WriteFile(path, []byte(src), 0o644)
	im, err := LoadImage(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(im.Layer) != 2 || im.Layer[0].Rootfs != filepath.Join(dir, "base.tar") || im.Layer[1].Rootfs != "/abs/app" || im.Layer[1].Name != "app" {
		t.Errorf("layers = %+v", im.Layer)
	}
	layer := func(name, rootfs string) string {
		return "\n[[layer]]\nname = \"" + name + "\"\nrootfs = \"" + rootfs + "\"\n"
	}
	for _, c := range []struct{ name, src, want string }{
		{"no rootfs and no layer", layerHead, "image.toml: rootfs: required key missing (or [[layer]] tables"},
		{"both", layerHead + "rootfs = \"/r\"\n" + layer("a", "/a") + layer("b", "/b"), "image.toml:4: rootfs: given with [[layer]] tables"},
		{"one layer", layerHead + layer("a", "/a"), "image.toml:5: layer: one [[layer]] is a plain root"},
		{"bad name, second layer", layerHead + layer("a", "/a") + layer("../b", "/b"), "image.toml:10: layer.name: [[layer]] number 2: layer name \"../b\""},
		{"twice", layerHead + layer("a", "/a") + layer("a", "/b"), "image.toml:10: layer.name: [[layer]] number 2: the name \"a\" is taken"},
		{"no rootfs", layerHead + layer("a", "/a") + "\n[[layer]]\nname = \"b\"\n", "image.toml:9: layer.rootfs: [[layer]] number 2 (b): required key missing"},
		{"no name", layerHead + layer("a", "/a") + "\n[[layer]]\nrootfs = \"/b\"\n", "image.toml:9: layer.name: [[layer]] number 2: required key missing"},
		{"with layers", layerHead + "layers = [\"/x.tar\"]\n" + layer("a", "/a") + layer("b", "/b"), "image.toml:4: layers: given with [[layer]] tables"},
		{"too many", layerHead + strings.Repeat(layer("a", "/a"), 17), "at most 16"},
	} {
		t.Run(c.name, func(t *testing.T) {
			im, err := ParseImage("image.toml", []byte(c.src))
			if err == nil {
				err = im.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("= %v, want %q", err, c.want)
			}
		})
	}
}
