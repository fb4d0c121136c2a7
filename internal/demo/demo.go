// Package demo builds the demo device's root filesystem: u-root's Go
// userland (a shell and core commands, no C toolchain needed for any arch),
// its own init as /sbin/init, and ovrootctl. It is what `make demo` boots;
// it is an example of a rootfs, not part of what a device needs.
package demo

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/layout"
)

// Commands are the u-root commands put in /bin (listed as tools in go.mod,
// so their dependencies are pinned by go.sum). poweroff, reboot and halt
// are the demo's init under those names.
var Commands = []string{
	"gosh", "ls", "cat", "echo", "mount", "umount", "mkdir", "rm", "cp", "mv", "ln", "sync",
	"dmesg", "ps", "uname", "df", "touch", "grep", "find", "sleep",
	"tail", "head", "wc", "hexdump",
}

// Shell is the console's shell: u-root's rush reads lines in the
// terminal's cooked mode, so the guest kernel echoes and edits them and any
// terminal size works on a serial console, which cannot tell the guest its
// size. gosh (in /bin too, for history and completion) redraws its line on
// every key assuming 80x24: garbled on a wider terminal, slow under TCG.
const Shell = "github.com/u-root/u-root/cmds/exp/rush"

// Init is the demo's /sbin/init (see its package comment): no tmpfs over
// /etc, a shell kept on the console, and a poweroff that syncs first.
const Init = "./internal/demo/init"

// Programs is what the demo compiles: its init, ovrootctl (from the source
// built into ovroot, as images are), the shell and the u-root commands.
func Programs() gobuild.Set {
	set := gobuild.Set{Name: "demo", Pkgs: []string{Init, "./cmd/ovrootctl", Shell}}
	for _, c := range Commands {
		set.Pkgs = append(set.Pkgs, gobuild.URoot+"core/"+c)
	}
	return set
}

// ReleaseFile names the demo release a root is (1 for the image, 2 for
// the update bundle ovroot demo builds beside it).
const ReleaseFile = "etc/demo-release"

// Welcome is /etc/motd, which the demo's init prints before each shell:
// what to try, and that it persists.
func Welcome(arch layout.Arch, release string) string {
	upgrade := fmt.Sprintf(`  ovrootctl upgrade /dev/vdb --reboot
      install release 2 (when started with ovroot run --disk
      out/demo/%s-update.bundle out/demo/%s.img)`, arch, arch)
	if release != "1" {
		upgrade = `  ovrootctl mark-good               confirm release 2 (on trial till then)`
	}
	return fmt.Sprintf(`
ovroot demo, release %s (%s). / is a read-only squashfs (/rom) with an ext4
overlay (/overlay) on top: what you change persists until a factory reset.
  ovrootctl status                  how this root was built and booted
  echo hello > /etc/hello           change anything: /etc, /root, /var, ...
  ovrootctl changes                 what differs from the factory root
  poweroff                          then ovroot run again: /etc/hello is there
  ovrootctl factory-reset --reboot  back to the factory root at the next boot
%s
reboot and poweroff end QEMU; ovroot run boots the same disk again.

`, release, arch, upgrade)
}

// Install lays out the demo root in dir from the compiled programs in
// progs (Programs, or a subset of its commands): /sbin/init and its poweroff, reboot and halt
// links, the shell as /bin/sh, ovrootctl, the commands, /etc/hostname, the
// welcome and the release.
func Install(dir, progs string, arch layout.Arch, release string, commands []string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "etc", "tmp", "root", "var", "proc", "sys", "dev", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	install := map[string]string{"init": "sbin/init", "ovrootctl": "usr/bin/ovrootctl", "rush": "bin/rush"}
	for _, c := range commands {
		install[c] = "bin/" + c
	}
	for prog, dst := range install {
		if err := copyFile(filepath.Join(progs, prog), filepath.Join(dir, dst)); err != nil {
			return err
		}
	}
	links := []struct{ name, target string }{{"bin/sh", "rush"}, {"bin/defaultsh", "rush"}}
	for _, n := range []string{"poweroff", "reboot", "halt"} {
		links = append(links, struct{ name, target string }{"bin/" + n, "../sbin/init"})
	}
	for _, l := range links {
		p := filepath.Join(dir, l.name)
		os.Remove(p)
		if err := os.Symlink(l.target, p); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/hostname": "ovroot-demo\n",
		"etc/motd":     Welcome(arch, release),
		ReleaseFile:    release + "\n",
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
