package boot

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestDescribeMount(t *testing.T) {
	for _, tc := range []struct {
		source, fstype string
		flags          uintptr
		data, want     string
	}{
		{"/dev/vda2", "squashfs", unix.MS_RDONLY, "", "/dev/vda2 (squashfs, ro)"},
		{"/dev/vda3", "ext4", unix.MS_RDONLY | unix.MS_NOATIME, "", "/dev/vda3 (ext4, ro,noatime)"},
		{"tmpfs", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", "tmpfs (tmpfs, nosuid,nodev, mode=0755)"},
		{"/rom", "", unix.MS_MOVE, "", "/rom (move)"},
		{"overlay", "overlay", 0, "lowerdir=/rom", "overlay (overlay, lowerdir=/rom)"},
		{"x", "", unix.MS_BIND, "", "x (0x1000)"},
	} {
		if got := describeMount(tc.source, tc.fstype, tc.flags, tc.data); got != tc.want {
			t.Errorf("describeMount(%q, %q, %#x, %q) = %q, want %q", tc.source, tc.fstype, tc.flags, tc.data, got, tc.want)
		}
	}
}
