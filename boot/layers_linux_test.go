package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovroot/ovroot/layout"
)

const threeLayers = `{"layers":[{"name":"base"},{"name":"app","offset":0,"size":8192},{"name":"config","offset":8192,"size":4096}]}`

// layerTable puts a layer table into the fake root (/rom), as the bottom
// layer's squashfs holds it.
func layerTable(table string) func(root string) {
	return func(root string) {
		p := filepath.Join(root, layout.RomDir, layout.LayersFile)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(table), 0o644)
	}
}

func TestStackedLayers(t *testing.T) {
	e := &bootEnv{
		cmdline: "console=ttyS0",
		sys:     &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, squashfsBytes: 10000},
		setup:   layerTable(threeLayers),
	}
	b, err := e.run(t)
	if err != nil {
		t.Fatalf("Run() = %v", err)
	}
	const lowers = "/run/ovroot/layers/config:/run/ovroot/layers/app:/run/ovroot/layers/base"
	// The bottom squashfs (10000 bytes) ends in its 3rd 4 KiB block: the
	// layers after it count from byte 12288.
	want := []string{
		fmt.Sprintf("mount /dev/vda2 /rom squashfs %#x ", unix.MS_RDONLY),
		"squashfs-bytes /dev/vda2",
		"umount /rom",
		"map-layer /dev/vda2 base 0 12288",
		fmt.Sprintf("mount /dev/mapper/ovroot-layer-base /run/ovroot/layers/base squashfs %#x ", unix.MS_RDONLY),
		"map-layer /dev/vda2 app 12288 8192",
		fmt.Sprintf("mount /dev/mapper/ovroot-layer-app /run/ovroot/layers/app squashfs %#x ", unix.MS_RDONLY),
		"map-layer /dev/vda2 config 20480 4096",
		fmt.Sprintf("mount /dev/mapper/ovroot-layer-config /run/ovroot/layers/config squashfs %#x ", unix.MS_RDONLY),
		fmt.Sprintf("mount overlay /rom overlay %#x lowerdir=%s", unix.MS_RDONLY, lowers),
	}
	got := e.sys.calls
	i := indexOf(got, want[0])
	if i < 0 || len(got) < i+len(want) || !reflect.DeepEqual(got[i:i+len(want)], want) {
		t.Fatalf("calls:\n%s\nwant in order:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if indexOf(got, "mount overlay /newroot overlay 0x0 lowerdir="+lowers+",upperdir=/overlay/upper,workdir=/overlay/work") < 0 {
		t.Errorf("the root's overlay does not stack the layers:\n%s", strings.Join(got, "\n"))
	}
	wantState := []layout.LayerState{
		{Name: "base", Device: "/dev/mapper/ovroot-layer-base", Size: 12288},
		{Name: "app", Device: "/dev/mapper/ovroot-layer-app", Offset: 12288, Size: 8192},
		{Name: "config", Device: "/dev/mapper/ovroot-layer-config", Offset: 20480, Size: 4096},
	}
	if st := b.State(); !reflect.DeepEqual(st.Layers, wantState) {
		t.Errorf("state layers = %+v, want %+v", st.Layers, wantState)
	}
}

func TestStackedLayersVerity(t *testing.T) {
	// Through dm-verity, the layers are mapped from the checked device.
	e := &bootEnv{
		cmdline: "ovroot.verity=sha256:3:00ff:abababababababababababababababababababababababababababababababab",
		sys:     &fakeSys{devs: standardDisk(), probe: map[string]Content{"/dev/vda3": ContentExt4}, squashfsBytes: 4096},
		setup:   layerTable(threeLayers),
	}
	if _, err := e.run(t); err != nil {
		t.Fatalf("Run() = %v", err)
	}
	for _, c := range []string{"squashfs-bytes /dev/dm-0", "map-layer /dev/dm-0 app 4096 8192", "map-layer /dev/dm-0 config 12288 4096"} {
		if indexOf(e.sys.calls, c) < 0 {
			t.Errorf("no %q in:\n%s", c, strings.Join(e.sys.calls, "\n"))
		}
	}
}

func TestStackedLayersErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		table   string
		sys     func() *fakeSys
		wantErr string
	}{
		{name: "a layer that cannot be mapped", table: threeLayers,
			sys:     func() *fakeSys { return &fakeSys{squashfsBytes: 4096, mapErr: map[string]error{"config": unix.EINVAL}} },
			wantErr: "layer config (bytes 12288 to 16384 of root /dev/vda2): invalid argument"},
		{name: "a layer that is not a squashfs", table: threeLayers,
			sys: func() *fakeSys {
				return &fakeSys{squashfsBytes: 4096, mountErr: map[string]error{"/run/ovroot/layers/app": unix.EINVAL}}
			},
			wantErr: "layer app: mount /dev/mapper/ovroot-layer-app (bytes 4096 to 12288 of root /dev/vda2) on /run/ovroot/layers/app: invalid argument"},
		{name: "a damaged table", table: `{"layers":[{"name":"base"}`,
			sys:     func() *fakeSys { return &fakeSys{squashfsBytes: 4096} },
			wantErr: "root /dev/vda2: parse etc/ovroot/layers.json"},
		{name: "overlapping layers", table: `{"layers":[{"name":"base"},{"name":"app","size":8192},{"name":"config","offset":4096,"size":4096}]}`,
			sys:     func() *fakeSys { return &fakeSys{squashfsBytes: 4096} },
			wantErr: `layer "config" at offset 4096 overlaps`},
		{name: "no superblock", table: threeLayers,
			sys:     func() *fakeSys { return &fakeSys{} },
			wantErr: "the bottom layer base: no squashfs superblock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := tc.sys()
			sys.devs, sys.probe = standardDisk(), map[string]Content{"/dev/vda3": ContentExt4}
			e := &bootEnv{cmdline: "console=ttyS0", sys: sys, setup: layerTable(tc.table)}
			b, err := e.run(t)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run() = %v, want an error with %q", err, tc.wantErr)
			}
			if indexOf(sys.calls, "switch_root /newroot /sbin/init") >= 0 {
				t.Error("switched root after a layer failed")
			}
			// Whatever of the stack was mapped is unmapped again (a
			// mapping would hold the partition: the next attempt could
			// not mount it).
			for i, c := range sys.calls {
				if f := strings.Fields(c); len(f) > 2 && f[0] == "map-layer" && sys.mapErr[f[2]] == nil {
					if indexOf(sys.calls[i:], "unmap-layer "+f[2]) < 0 {
						t.Errorf("layer %s stays mapped:\n%s", f[2], strings.Join(sys.calls, "\n"))
					}
				}
			}
			// /rom (the bottom squashfs, or the stack) is not left.
			if i := lastIndex(sys.calls, "mount /dev/vda2 /rom"); i < 0 || indexOf(sys.calls[i:], "umount /rom") < 0 {
				t.Errorf("/rom stays mounted after the failed attempt:\n%s", strings.Join(sys.calls, "\n"))
			}
			// Whatever of the stack was mounted is unmounted again.
			for i, c := range sys.calls {
				if f := strings.Fields(c); len(f) > 2 && f[0] == "mount" && strings.HasPrefix(f[2], layout.LayersDir) && sys.mountErr[f[2]] == nil {
					if indexOf(sys.calls[i:], "umount "+f[2]) < 0 {
						t.Errorf("%s stays mounted:\n%s", f[2], strings.Join(sys.calls, "\n"))
					}
				}
			}
			if b.State().Layers != nil {
				t.Errorf("state lists layers after the error: %+v", b.State().Layers)
			}
		})
	}
}

func TestSquashfsBytesUsed(t *testing.T) {
	sb := make([]byte, 96)
	copy(sb, "hsqs")
	sb[40], sb[41] = 0x10, 0x27 // 10000
	if n, err := squashfsBytesUsed(strings.NewReader(string(sb))); err != nil || n != 10000 {
		t.Errorf("= %d, %v; want 10000", n, err)
	}
	if _, err := squashfsBytesUsed(strings.NewReader(strings.Repeat("x", 96))); err == nil {
		t.Error("no magic: no error")
	}
	if _, err := squashfsBytesUsed(strings.NewReader("hsqs")); err == nil || !errors.Is(err, err) {
		t.Error("short: no error")
	}
}

// lastIndex is the position of the last call starting with prefix, or -1.
func lastIndex(calls []string, prefix string) int {
	for i := len(calls) - 1; i >= 0; i-- {
		if strings.HasPrefix(calls[i], prefix) {
			return i
		}
	}
	return -1
}
