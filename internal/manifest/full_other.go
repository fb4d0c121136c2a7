//go:build !linux

package manifest

import (
	"fmt"
	"io/fs"
)

func statOf(p string, fi fs.FileInfo) (stat, error) {
	return stat{}, fmt.Errorf("manifest of %s: owners and hard links are read on Linux only", p)
}

func xattrs(p string) ([]Xattr, error) { return nil, nil }
