// Package demo builds the demo device's root filesystem: u-root's Go
// userland (a shell and core commands, no C toolchain needed for any arch),
// u-root's init as /sbin/init, and ovrootctl. It is what `make demo` boots;
// it is an example of a rootfs, not part of what a device needs.
package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/layout"
)

// Commands are the u-root commands put in /bin (listed as tools in go.mod,
// so their dependencies are pinned by go.sum).
var Commands = []string{
	"gosh", "ls", "cat", "echo", "mount", "umount", "mkdir", "rm", "cp", "mv", "ln", "sync",
	"dmesg", "ps", "uname", "poweroff", "shutdown", "df", "touch", "grep", "find", "sleep",
	"tail", "head", "wc", "hexdump",
}

// Shell is the console's shell: u-root's rush reads lines in the
// terminal's cooked mode, so the guest kernel echoes and edits them and any
// terminal size works on a serial console, which cannot tell the guest its
// size. gosh (in /bin too, for history and completion) redraws its line on
// every key assuming 80x24: garbled on a wider terminal, slow under TCG.
const Shell = "github.com/u-root/u-root/cmds/exp/rush"

// Programs is what the demo compiles: the commands, u-root's init and
// ovrootctl (from the source built into ovroot, as images are).
func Programs() gobuild.Set {
	set := gobuild.Set{Name: "demo", Pkgs: []string{gobuild.URoot + "core/init", "./cmd/ovrootctl", Shell}}
	for _, c := range Commands {
		set.Pkgs = append(set.Pkgs, gobuild.URoot+"core/"+c)
	}
	return set
}

const motd = `Welcome to the ovroot demo.
  ovrootctl status     how the root was built (persistent or VOLATILE)
  ovrootctl changes    what you changed compared with the factory root
  cat /proc/mounts     / is an overlay of /rom (squashfs) and /overlay (ext4)
  sync                 then
  poweroff             power off (your changes to / persist across boots; u-root's
                       poweroff does not sync, so run sync first)
`

// BuildRootfs writes the demo root filesystem for arch into dir, with the
// programs compiled (or found) by cache.
func BuildRootfs(ctx context.Context, arch layout.Arch, cache *gobuild.Cache, dir string) error {
	progs, err := cache.Programs(ctx, arch, Programs())
	if err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "etc", "tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	install := map[string]string{"init": "sbin/init", "ovrootctl": "usr/bin/ovrootctl", "rush": "bin/rush"}
	for _, c := range Commands {
		install[c] = "bin/" + c
	}
	for prog, dst := range install {
		if err := copyFile(filepath.Join(progs, prog), filepath.Join(dir, dst)); err != nil {
			return err
		}
	}
	// u-root's init runs /bin/defaultsh; sh is what people type.
	for _, l := range []struct{ name, target string }{{"bin/defaultsh", "rush"}, {"bin/sh", "rush"}} {
		p := filepath.Join(dir, l.name)
		os.Remove(p)
		if err := os.Symlink(l.target, p); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/hostname": "ovroot-demo\n",
		"etc/motd":     motd,
		"etc/profile":  "cat /etc/motd\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		return fmt.Errorf("demo rootfs: %w", err)
	}
	return nil
}
