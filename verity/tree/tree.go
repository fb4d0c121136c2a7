// Package tree builds the dm-verity hash tree of a root on the host
// (ovroot build): package verity is what the device needs to check it.
package tree

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	dmv "github.com/containerd/go-dmverity/pkg/verity"
	"github.com/ovroot/ovroot/verity"
)

// Salt is the salt for a squashfs: derived from its bytes, so that the
// same inputs give the same image (no random salt), and two different
// roots never share one.
func Salt(squashfs io.Reader) ([]byte, error) {
	h := sha256.New()
	io.WriteString(h, "ovroot verity salt\x00")
	if _, err := io.Copy(h, squashfs); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// Format pads the file at path to a whole number of blocks and appends
// the verity superblock and hash tree, salted by Salt of its content.
// The superblock's UUID comes from the salt, for the same reason.
func Format(path string) (verity.Info, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return verity.Info{}, err
	}
	salt, err := Salt(f)
	if err != nil {
		f.Close()
		return verity.Info{}, fmt.Errorf("verity: read %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return verity.Info{}, err
	}
	if st.Size() == 0 {
		f.Close()
		return verity.Info{}, fmt.Errorf("verity: %s is empty", path)
	}
	blocks := uint64((st.Size() + verity.BlockSize - 1) / verity.BlockSize)
	if err := f.Truncate(int64(blocks) * verity.BlockSize); err != nil {
		f.Close()
		return verity.Info{}, err
	}
	if err := f.Close(); err != nil {
		return verity.Info{}, err
	}
	p := dmv.DefaultParams()
	p.DataBlockSize, p.HashBlockSize = verity.BlockSize, verity.BlockSize
	p.DataBlocks = blocks
	p.Salt, p.SaltSize = salt, uint16(len(salt))
	p.HashAreaOffset = blocks * verity.BlockSize
	copy(p.UUID[:], salt[:16])
	p.UUID[6] = p.UUID[6]&0x0f | 0x40 // a version 4 UUID in form
	p.UUID[8] = p.UUID[8]&0x3f | 0x80
	root, err := dmv.Create(&p, path, path)
	if err != nil {
		return verity.Info{}, fmt.Errorf("verity: hash tree of %s: %w", path, err)
	}
	return verity.Info{DataBlocks: blocks, Salt: salt, RootHash: root}, nil
}
