// Package config holds ovroot's two TOML formats: image.toml (what `ovroot
// build` assembles) and init.toml (what the device's init does, carried in
// the initramfs). Every error names the file, the line and the key.
//
// It parses and validates; it does not read kernels, rootfs trees or disks.
package config
