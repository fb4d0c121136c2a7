package boot

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// mountFlagNames are the mount(2) flags the init uses, by name.
var mountFlagNames = []struct {
	flag uintptr
	name string
}{
	{unix.MS_RDONLY, "ro"},
	{unix.MS_NOSUID, "nosuid"},
	{unix.MS_NODEV, "nodev"},
	{unix.MS_NOEXEC, "noexec"},
	{unix.MS_NOATIME, "noatime"},
	{unix.MS_MOVE, "move"},
}

// describeMount says what a mount(2) call asks for, e.g.
// "/dev/vda3 (ext4, noatime)" or "tmpfs (tmpfs, nosuid,nodev, mode=0755)".
func describeMount(source, fstype string, flags uintptr, data string) string {
	var parts []string
	if fstype != "" {
		parts = append(parts, fstype)
	}
	var names []string
	for _, f := range mountFlagNames {
		if flags&f.flag != 0 {
			names = append(names, f.name)
			flags &^= f.flag
		}
	}
	if flags != 0 {
		names = append(names, fmt.Sprintf("%#x", flags))
	}
	if len(names) > 0 {
		parts = append(parts, strings.Join(names, ","))
	}
	if data != "" {
		parts = append(parts, data)
	}
	if len(parts) == 0 {
		return source
	}
	return source + " (" + strings.Join(parts, ", ") + ")"
}
