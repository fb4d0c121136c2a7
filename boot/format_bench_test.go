package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkFormatExt4 formats a sparse file of each size as the first
// boot formats the data partition (mkfsExt4, with the zeroing of the
// journal sent as fallocate(FALLOC_FL_ZERO_RANGE)). Compare
// 256MiB with 4096MiB for how the cost grows with the partition.
func BenchmarkFormatExt4(b *testing.B) {
	for _, size := range []int64{256 << 20, 4 << 30} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			dir := b.TempDir()
			for i := 0; i < b.N; i++ {
				p := filepath.Join(dir, "data.img")
				f, err := os.Create(p)
				if err != nil {
					b.Fatal(err)
				}
				if err := f.Truncate(size); err != nil {
					b.Fatal(err)
				}
				if err := makeExt4(f, size, "rootfs_data"); err != nil {
					b.Fatal(err)
				}
				f.Close()
				os.Remove(p)
			}
		})
	}
}
