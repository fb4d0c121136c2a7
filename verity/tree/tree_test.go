package tree_test

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/verity"
	"github.com/ovroot/ovroot/verity/tree"
)

// squashLike is a seeded file of n bytes.
func squashLike(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.New(rand.NewSource(int64(n))).Read(b)
	copy(b, "hsqs")
	p := filepath.Join(t.TempDir(), "root.squashfs")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// veritysetup runs Debian's veritysetup (cryptsetup-bin), the reference
// the kernel's format is defined by.
func veritysetup(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("veritysetup"); err != nil {
		testenv.Missing(t, "veritysetup (Debian cryptsetup-bin) is not installed")
	}
	out, err := exec.Command("veritysetup", args...).CombinedOutput()
	return string(out), err
}

// What Format writes, veritysetup verifies, with the root hash and
// layout Info says; veritysetup's own format of the same data with the
// same salt gives the same root hash; one flipped byte anywhere in the
// data is found.
func TestFormatIsVeritysetups(t *testing.T) {
	for _, size := range []int{1, 4096, 1<<20 + 100, 3<<20 + 4095} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			p := squashLike(t, size)
			info, err := tree.Format(p)
			if err != nil {
				t.Fatal(err)
			}
			if want := uint64((size + verity.BlockSize - 1) / verity.BlockSize); info.DataBlocks != want {
				t.Fatalf("DataBlocks = %d, want %d", info.DataBlocks, want)
			}
			root := strings.Split(info.Param(), ":")[3]
			off := "--hash-offset=" + strconv.FormatInt(info.HashOffset(), 10)
			if out, err := veritysetup(t, "verify", off, p, p, root); err != nil {
				t.Fatalf("veritysetup verify: %v\n%s", err, out)
			}
			out, err := veritysetup(t, "dump", off, p)
			if err != nil || !strings.Contains(out, "Data blocks:     \t"+strconv.FormatUint(info.DataBlocks, 10)) && !strings.Contains(out, strconv.FormatUint(info.DataBlocks, 10)) {
				t.Fatalf("veritysetup dump: %v\n%s", err, out)
			}
			if !verity.HasSuperblock(mustOpen(t, p), info) {
				t.Error("no superblock at the hash offset")
			}
			// veritysetup's own tree of the same data and salt.
			data := make([]byte, info.HashOffset())
			f, _ := os.ReadFile(p)
			copy(data, f)
			ref := filepath.Join(t.TempDir(), "ref")
			os.WriteFile(ref, data, 0o644)
			out, err = veritysetup(t, "format", "--salt="+strings.Split(info.Param(), ":")[2], off, ref, ref)
			if err != nil || !strings.Contains(out, root) {
				t.Fatalf("veritysetup format of the same data and salt does not give root %s: %v\n%s", root, err, out)
			}
			// A flipped byte in the data.
			b, _ := os.ReadFile(p)
			b[rand.New(rand.NewSource(7)).Intn(size)] ^= 0x10
			os.WriteFile(p, b, 0o644)
			if out, err := veritysetup(t, "verify", off, p, p, root); err == nil {
				t.Fatalf("veritysetup verify accepts a flipped byte:\n%s", out)
			}
		})
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The same squashfs gives the same bytes and the same Info (reproducible
// images), and another squashfs another salt.
func TestFormatReproducible(t *testing.T) {
	a, b := squashLike(t, 100000), squashLike(t, 100000)
	ia, err := tree.Format(a)
	if err != nil {
		t.Fatal(err)
	}
	ib, _ := tree.Format(b)
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) || ia.Param() != ib.Param() {
		t.Fatal("two formats of the same data differ")
	}
	c := squashLike(t, 100001)
	ic, _ := tree.Format(c)
	if bytes.Equal(ic.Salt, ia.Salt) {
		t.Fatal("two roots share a salt")
	}
}
