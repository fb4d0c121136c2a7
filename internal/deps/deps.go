// Package deps pins the modules the project builds on while packages are
// being written in parallel; it goes away once every dependency is imported
// by real code.
package deps

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/diskfs/go-diskfs"
	_ "github.com/diskfs/go-diskfs/filesystem/ext4"
	_ "github.com/diskfs/go-diskfs/filesystem/fat32"
	_ "github.com/diskfs/go-diskfs/partition/gpt"
	_ "github.com/u-root/u-root/pkg/cpio"
	_ "github.com/u-root/u-root/pkg/kmodule"
	_ "github.com/u-root/u-root/pkg/mount"
	_ "golang.org/x/sys/unix"
)
