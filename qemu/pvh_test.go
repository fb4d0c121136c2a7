package qemu

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/internal/testenv"
)

// Debian's amd64 kernel (xz) decompresses to an x86-64 ELF with a PVH
// entry, once: the second call finds it in the cache.
func TestPVHKernel(t *testing.T) {
	bz := filepath.Join(testenv.KernelCache(), "amd64", "vmlinuz")
	if _, err := os.Stat(bz); err != nil {
		testenv.Missing(t, "Debian's amd64 kernel in the kernel cache (make kernels)")
	}
	dir := t.TempDir()
	v, err := PVHKernel(bz, dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(v)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	fi, _ := os.Stat(v)
	os.WriteFile(v, []byte("cached"), 0o644) // the next call must not decompress again
	if again, err := PVHKernel(bz, dir); err != nil || again != v {
		t.Fatalf("second call: %s, %v", again, err)
	}
	if b, _ := os.ReadFile(v); string(b) != "cached" {
		t.Error("the second call wrote the vmlinux again")
	}
	t.Logf("vmlinux: %d bytes", fi.Size())
}

func TestPVHKernelRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"not a bzImage", []byte("hello"), "not a bzImage"},
		{"arm64 Image", append(make([]byte, 0x38), append([]byte("ARMd"), make([]byte, 0x300)...)...), "not a bzImage"},
		{"payload out of range", bzImage(0x20c, 1<<20, nil), "out of range"},
		{"lz4 payload", bzImage(0x20c, 0, []byte{0x02, 0x21, 0x4c, 0x18, 0, 0}), "not xz, gzip or zstd"},
		{"gzip of junk", bzImage(0x20c, 0, gz(t, []byte("not an elf"))), "decompressed kernel"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := PVHKernel(write(strings.ReplaceAll(c.name, " ", "-"), c.data), filepath.Join(dir, "cache"))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("PVHKernel = %v, want an error with %q", err, c.want)
			}
		})
	}
}

// bzImage is a minimal bzImage header (one setup sector) with payload.
func bzImage(proto uint16, length int, payload []byte) []byte {
	b := make([]byte, 2*512+len(payload))
	b[0x1f1] = 1
	copy(b[0x202:], "HdrS")
	b[0x206], b[0x207] = byte(proto), byte(proto>>8)
	if length == 0 {
		length = len(payload)
	}
	b[0x24c], b[0x24d], b[0x24e], b[0x24f] = byte(length), byte(length>>8), byte(length>>16), byte(length>>24)
	copy(b[1024:], payload)
	return b
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}
