package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/layout"
)

func TestPrintSummary(t *testing.T) {
	res := &imagebuild.ImageResult{
		Result: &imagebuild.Result{Partitions: []imagebuild.Partition{
			{Index: 1, Label: layout.BootLabel, Size: 128 << 20},
			{Index: 2, Label: layout.RootLabel, Size: 3 << 20},
			{Index: 3, Label: layout.DataLabel, Size: 256 << 20},
		}, SquashfsBytes: 2162688, Entries: 8, Rootfs: "OCI image layout app, linux/arm64, 3 layers, sha256:ab"},
		Path: "out dir/disk.img", Bytes: 389 << 20, Ctl: "added /usr/sbin/ovrootctl (the rootfs has none)",
	}
	var b bytes.Buffer
	printSummary(&b, config.DefaultImage(layout.ARM64), res)
	want := []string{
		"out dir/disk.img: arm64 image, 389 MiB",
		"  1  " + layout.BootLabel, "128 MiB",
		"  3  " + layout.DataLabel, "256 MiB",
		"squashfs 2.1 MiB, 8 entries",
		"  rootfs: OCI image layout app, linux/arm64, 3 layers, sha256:ab\n",
		"e2fsck: none (the data partition cannot be repaired)",
		"ovrootctl: added /usr/sbin/ovrootctl",
		"boot it: ovroot run 'out dir/disk.img'\n",
	}
	for _, w := range want {
		if !strings.Contains(b.String(), w) {
			t.Errorf("summary lacks %q:\n%s", w, b.String())
		}
	}
	if lines := strings.Split(strings.TrimSpace(b.String()), "\n"); !strings.HasPrefix(lines[len(lines)-1], "boot it: ") {
		t.Errorf("summary does not end with the command that boots the image:\n%s", b.String())
	}
}
