package boot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestGrowFSOnline grows an ext4 made by the init's own formatter (no
// reserved GDT blocks) while it is mounted, as the boot does, to a little
// more and to far more than its group descriptors have room for (the kernel
// converts to meta_bg), and checks the result with e2fsck -fn. Root only:
// a loop device and a mount.
func TestGrowFSOnline(t *testing.T) {
	testenv.RequireRoot(t, "a loop device and a mount")
	if !hasCapSysResource() {
		// Containers often drop it; the init (PID 1) has it. TestGrowPowerCut
		// proves the online resize in QEMU.
		t.Skip("no CAP_SYS_RESOURCE here: EXT4_IOC_RESIZE_FS needs it")
	}
	for _, tc := range []struct {
		name     string
		from, to int64
	}{
		{"4x", 256 << 20, 1 << 30},
		{"256 MiB to 40 GiB", 256 << 20, 40 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "data.img")
			f, err := os.Create(img)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(tc.from); err != nil {
				t.Fatal(err)
			}
			if err := makeExt4(f, tc.from, "rootfs_data"); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(tc.to); err != nil {
				t.Fatal(err)
			}
			f.Close()
			out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
			if err != nil {
				testenv.Missing(t, "losetup: "+strings.TrimSpace(string(out)))
			}
			loop := strings.TrimSpace(string(out))
			defer exec.Command("losetup", "-d", loop).Run()
			mnt := filepath.Join(dir, "mnt")
			os.Mkdir(mnt, 0o755)
			if err := unix.Mount(loop, mnt, "ext4", 0, ""); err != nil {
				t.Fatalf("mount %s: %v", loop, err)
			}
			mounted := true
			defer func() {
				if mounted {
					unix.Unmount(mnt, 0)
				}
			}()
			from, to, err := LinuxSys{}.GrowFS(loop, mnt)
			if err != nil {
				t.Fatalf("GrowFS: %v", err)
			}
			if from != tc.from || to != tc.to {
				t.Errorf("GrowFS = %d, %d; want %d, %d", from, to, tc.from, tc.to)
			}
			var st unix.Statfs_t
			unix.Statfs(mnt, &st)
			if got := int64(st.Blocks) * int64(st.Bsize); got < tc.to*9/10 {
				t.Errorf("statfs after the grow: %d bytes, want about %d", got, tc.to)
			}
			if a, b, err := (LinuxSys{}).GrowFS(loop, mnt); err != nil || a != b {
				t.Errorf("second GrowFS = %d, %d, %v; want nothing to do", a, b, err)
			}
			unix.Unmount(mnt, 0)
			mounted = false
			if out, err := exec.Command("e2fsck", "-fn", loop).CombinedOutput(); err != nil {
				t.Errorf("e2fsck -fn after the grow: %v\n%s", err, out)
			}
		})
	}
}

// hasCapSysResource reads CapEff of this process (CAP_SYS_RESOURCE is 24).
func hasCapSysResource() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<24) != 0
		}
	}
	return false
}
