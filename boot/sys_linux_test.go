package boot

import (
	"reflect"
	"testing"
)

func TestRepairAttempts(t *testing.T) {
	got := repairAttempts("/dev/vda3", func() (ext4Backup, bool) { return ext4Backup{Block: 8193, BlockSize: 1024}, true })
	want := [][]string{{"-f", "-p", "/dev/vda3"}, {"-f", "-p", "-b", "8193", "-B", "1024", "/dev/vda3"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("repairAttempts = %v, want %v", got, want)
	}
	if got := repairAttempts("/dev/vda3", func() (ext4Backup, bool) { return ext4Backup{}, false }); len(got) != 1 {
		t.Errorf("without a backup: %v", got)
	}
}
