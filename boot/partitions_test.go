package boot

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseUevent(t *testing.T) {
	for _, tc := range []struct {
		name, in, disk string
		want           BlockDev
		wantErr        bool
	}{
		{
			name: "partition",
			in:   "MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=3\nPARTNAME=rootfs_data\n",
			disk: "vda",
			want: BlockDev{Name: "vda3", Disk: "vda", PartLabel: "rootfs_data", Partition: true, Number: 3, Major: 254, Minor: 3},
		},
		{
			name: "disk",
			in:   "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n",
			want: BlockDev{Name: "vda", Disk: "vda", Major: 254},
		},
		{name: "no devname", in: "MAJOR=1\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUevent([]byte(tc.in), tc.disk)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseUevent(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("parseUevent(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func disk(name string, minor int) BlockDev {
	return BlockDev{Name: name, Disk: name, Major: 254, Minor: minor}
}

func part(diskName string, n int, label string, diskMinor int) BlockDev {
	return BlockDev{Name: diskName + string(rune('0'+n)), Disk: diskName, PartLabel: label, Partition: true, Number: n, Major: 254, Minor: diskMinor + n}
}

func TestSelectPartitions(t *testing.T) {
	labels := []string{"rootfs", "rootfs_data"}
	for _, tc := range []struct {
		name        string
		devs        []BlockDev
		want        map[string]string // label -> device path
		missing     []string
		warnings    int
		errContains string
	}{
		{
			name: "one disk",
			devs: []BlockDev{disk("vda", 0), part("vda", 1, "boot", 0), part("vda", 2, "rootfs", 0), part("vda", 3, "rootfs_data", 0)},
			want: map[string]string{"rootfs": "/dev/vda2", "rootfs_data": "/dev/vda3"},
		},
		{
			name:    "nothing yet",
			devs:    nil,
			want:    map[string]string{},
			missing: []string{"rootfs", "rootfs_data"},
		},
		{
			name:    "data missing",
			devs:    []BlockDev{disk("vda", 0), part("vda", 2, "rootfs", 0)},
			want:    map[string]string{"rootfs": "/dev/vda2"},
			missing: []string{"rootfs_data"},
		},
		{
			name: "labels on different disks",
			devs: []BlockDev{disk("vda", 0), part("vda", 1, "rootfs", 0), disk("vdb", 16), part("vdb", 1, "rootfs_data", 16)},
			want: map[string]string{"rootfs": "/dev/vda1", "rootfs_data": "/dev/vdb1"},
		},
		{
			name: "second image plugged in: first disk wins",
			devs: []BlockDev{
				disk("vdb", 16), part("vdb", 2, "rootfs", 16), part("vdb", 3, "rootfs_data", 16),
				disk("vda", 0), part("vda", 2, "rootfs", 0), part("vda", 3, "rootfs_data", 0),
			},
			want:     map[string]string{"rootfs": "/dev/vda2", "rootfs_data": "/dev/vda3"},
			warnings: 2,
		},
		{
			name: "disk with both labels beats disk with one",
			devs: []BlockDev{
				disk("vda", 0), part("vda", 1, "rootfs", 0),
				disk("vdb", 16), part("vdb", 2, "rootfs", 16), part("vdb", 3, "rootfs_data", 16),
			},
			want:     map[string]string{"rootfs": "/dev/vdb2", "rootfs_data": "/dev/vdb3"},
			warnings: 1,
		},
		{
			name:        "same label twice on one disk",
			devs:        []BlockDev{disk("vda", 0), part("vda", 2, "rootfs", 0), part("vda", 4, "rootfs", 0), part("vda", 3, "rootfs_data", 0)},
			errContains: "same disk",
		},
		{
			name: "disks and unlabelled partitions are ignored",
			devs: []BlockDev{disk("vda", 0), {Name: "vda1", Disk: "vda", Partition: true}, part("vda", 2, "rootfs", 0), part("vda", 3, "rootfs_data", 0)},
			want: map[string]string{"rootfs": "/dev/vda2", "rootfs_data": "/dev/vda3"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := selectPartitions(tc.devs, labels...)
			if tc.errContains != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errContains) {
					t.Fatalf("selectPartitions() error = %v, want one containing %q", err, tc.errContains)
				}
				return
			}
			if err != nil {
				t.Fatalf("selectPartitions() error = %v", err)
			}
			got := map[string]string{}
			for l, d := range sel.Found {
				got[l] = d.Path()
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("selectPartitions() found %v, want %v", got, tc.want)
			}
			if !reflect.DeepEqual(sel.Missing, tc.missing) {
				t.Errorf("selectPartitions() missing %v, want %v", sel.Missing, tc.missing)
			}
			if len(sel.Warnings) != tc.warnings {
				t.Errorf("selectPartitions() warnings %q, want %d", sel.Warnings, tc.warnings)
			}
		})
	}
}
