package ctl

import "golang.org/x/sys/unix"

func mknodWhiteout(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o000, 0) }
