package qemu

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"github.com/ovroot/ovroot/internal/gobuild"
)

// An x86_64 bzImage starts with its own decompressor, which unpacks the
// kernel before it prints a line. Under TCG that emulated decompression
// is most of the time to the first line (Debian's kernel is xz: about 5 of
// the 11 seconds to a shell, measured). QEMU can instead start the
// uncompressed kernel (vmlinux, an ELF) at its PVH entry point, which
// Debian's kernel has (CONFIG_PVH: the Xen ELF note
// XEN_ELFNOTE_PHYS32_ENTRY): the same kernel, decompressed once on the
// host. Only direct boots (-kernel) do this; a boot through firmware and
// loader runs the bzImage as a device does.

// pvhNote is XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h).
const pvhNote = 18

// PVHKernel returns the uncompressed, PVH-bootable vmlinux of an x86_64
// bzImage, decompressed once into dir (the ovroot cache when dir is "")
// and kept there by the bzImage's SHA-256. An error says why not (another
// compression, no PVH entry): the caller boots the bzImage then.
func PVHKernel(bzImage, dir string) (string, error) {
	data, err := os.ReadFile(bzImage)
	if err != nil {
		return "", err
	}
	if dir == "" {
		c, err := gobuild.CacheDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(c, "pvh")
	}
	sum := sha256.Sum256(data)
	out := filepath.Join(dir, hex.EncodeToString(sum[:16])+".vmlinux")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	vmlinux, err := decompressBzImage(data)
	if err != nil {
		return "", err
	}
	if err := checkPVH(vmlinux); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".vmlinux-")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(vmlinux)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out) // whole or not at all, for concurrent boots
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return out, nil
}

// decompressBzImage returns the kernel a bzImage carries (Linux boot
// protocol 2.08+: payload_offset and payload_length at 0x248, from the
// start of the protected-mode code after the setup sectors).
func decompressBzImage(b []byte) ([]byte, error) {
	if len(b) < 0x250 || string(b[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage (no HdrS header)")
	}
	if v := binary.LittleEndian.Uint16(b[0x206:]); v < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x has no payload fields", v)
	}
	setup := int(b[0x1f1])
	if setup == 0 {
		setup = 4
	}
	start := (setup+1)*512 + int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	if start < 0 || n <= 0 || start+n > len(b) {
		return nil, errors.New("bzImage payload out of range")
	}
	p := b[start : start+n]
	switch {
	case bytes.HasPrefix(p, []byte("\xfd7zXZ\x00")):
		// The kernel's xz payload uses the x86 BCJ filter, which no Go
		// xz package reads: xz-utils does.
		cmd := exec.Command("xz", "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(p)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("xz -dc: %v: %s", err, bytes.TrimSpace(errOut.Bytes()))
		}
		return out.Bytes(), nil
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		r.Multistream(false)
		return io.ReadAll(r)
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		r, err := zstd.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	return nil, fmt.Errorf("bzImage payload compression % x is not xz, gzip or zstd", p[:min(6, len(p))])
}

// checkPVH checks that vmlinux is an x86-64 ELF with a PVH entry point.
func checkPVH(vmlinux []byte) error {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return fmt.Errorf("decompressed kernel: %w", err)
	}
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("decompressed kernel is for %s", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return err
		}
		for len(notes) >= 12 {
			nameSize := int(binary.LittleEndian.Uint32(notes))
			descSize := int(binary.LittleEndian.Uint32(notes[4:]))
			typ := binary.LittleEndian.Uint32(notes[8:])
			name := notes[12:min(len(notes), 12+nameSize)]
			if typ == pvhNote && string(bytes.TrimRight(name, "\x00")) == "Xen" {
				return nil
			}
			next := 12 + align4(nameSize) + align4(descSize)
			if next > len(notes) {
				break
			}
			notes = notes[next:]
		}
	}
	return errors.New("the kernel has no PVH entry point (CONFIG_PVH)")
}

func align4(n int) int { return (n + 3) &^ 3 }
