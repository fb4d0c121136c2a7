package integration

import (
	"reflect"
	"testing"
)

func TestCrashFsckProblems(t *testing.T) {
	out := `Pass 5: Checking group summary information
Free blocks count wrong for group #1 (7933, counted=6909).
Fix? no

Free blocks count wrong (122834, counted=117655).
Fix? no

Free inodes count wrong (16374, counted=16107).
Fix? no

Resize inode not valid.  Recreate? no
`
	got := crashFsckProblems(out)
	want := []string{"Free blocks count wrong for group #1 (7933, counted=6909).", "Resize inode not valid.  Recreate"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("crashFsckProblems = %q, want %q", got, want)
	}
	if got := crashFsckProblems("Free blocks count wrong (1, counted=2).\nFix? no\n"); len(got) != 0 {
		t.Errorf("global count flagged: %q", got)
	}
}
