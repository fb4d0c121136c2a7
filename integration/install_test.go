package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// TestInstalledBinary: an ovroot binary alone in a directory with no Go
// module above it (as after go install) builds an image from flags only,
// compiling the device programs from its embedded source; a second build,
// naming no kernel (Debian's from the kernel cache), compiles nothing and
// gives the same image; the image boots with a working ovrootctl the rootfs
// did not have, at /usr/sbin/ovrootctl, and repairs its data partition
// with the e2fsck it carries by default.
func TestInstalledBinary(t *testing.T) {
	requireTools(t)
	t.Parallel()
	bin := buildHostTool(t)
	for _, arch := range testArches {
		t.Run(string(arch), func(t *testing.T) {
			t.Parallel()
			testInstalledBinary(t, arch, bin)
		})
	}
}

func testInstalledBinary(t *testing.T, arch layout.Arch, bin string) {
	work := t.TempDir()
	for d := work; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			t.Fatalf("%s has a go.mod above it (%s): the test must run outside any module", work, d)
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	ovroot := filepath.Join(work, "ovroot")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ovroot, data, 0o755); err != nil {
		t.Fatal(err)
	}

	// A rootfs of the guest agent alone: no ovrootctl anywhere.
	agent, _ := buildGuest(t, arch)
	rootfs := filepath.Join(work, "rootfs")
	for _, d := range []string{"sbin", "proc", "sys", "dev", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	agentData, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "sbin/init"), agentData, 0o755); err != nil {
		t.Fatal(err)
	}

	k := filepath.Join(kernelCache(), arch.DebianArch())
	cache := t.TempDir() // a fresh ovroot cache: the first build compiles
	run := func(out string, kernelFlags bool) (stdout, stderr string) {
		t.Helper()
		args := []string{"build", "--arch", string(arch), "--rootfs", "rootfs", "-o", out}
		if kernelFlags {
			args = append(args, "--kernel", filepath.Join(k, "vmlinuz"), "--modules", filepath.Join(k, "modules"))
		}
		cmd := exec.Command(ovroot, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "OVROOT_CACHE="+cache, "OVROOT_KERNEL_CACHE="+kernelCache())
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s in %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), work, err, o.String(), e.String())
		}
		t.Logf("%s:\n%s%s", strings.Join(cmd.Args, " "), e.String(), o.String())
		return o.String(), e.String()
	}

	stdout, stderr := run("disk.img", true)
	if !strings.Contains(stderr, "go: compiling init, ovrootctl") {
		t.Errorf("first build with an empty cache did not compile the device programs:\n%s", stderr)
	}
	for _, want := range []string{
		"disk.img: " + string(arch) + " image",
		layout.BootLabel, layout.RootLabel, layout.DataLabel,
		"e2fsck: " + filepath.Join(k, "e2fsck"), // the default: where make kernels put it
		"ovrootctl: added /usr/sbin/ovrootctl",
		"boot it: ovroot run disk.img",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("build summary lacks %q:\n%s", want, stdout)
		}
	}

	// Nothing changed: nothing is compiled, and the image is the same.
	// This build names no kernel: it takes Debian's from the kernel
	// cache, says which, and gives the same image byte for byte.
	_, stderr = run("disk2.img", false)
	if strings.Contains(stderr, "go: compiling") || !strings.Contains(stderr, "from the cache") {
		t.Errorf("second build did not use the cache:\n%s", stderr)
	}
	rel, err := os.ReadFile(filepath.Join(k, "release"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "using Debian's " + strings.TrimSpace(string(rel)) + " from " + k; !strings.Contains(stderr, want) {
		t.Errorf("a build without --kernel did not say %q:\n%s", want, stderr)
	}
	a, _ := os.ReadFile(filepath.Join(work, "disk.img"))
	b, _ := os.ReadFile(filepath.Join(work, "disk2.img"))
	if !bytes.Equal(a, b) {
		t.Errorf("the second build (from the cache) gave another image than the first")
	}

	img := image{arch: arch, path: filepath.Join(work, "disk.img")}
	vm := boot(t, img)
	expect(t, vm, "GUEST: ready")
	status := guest(t, vm, "exec /usr/sbin/ovrootctl status")
	if !strings.Contains(status, "PERSISTENT") {
		t.Errorf("/usr/sbin/ovrootctl status:\n%s\nwant PERSISTENT", status)
	}
	guest(t, vm, "write /etc/precious.txt kept")
	powerOff(t, vm)

	// The quick path carries e2fsck by default: a destroyed primary
	// superblock (bytes 1024..2047 of the partition) is repaired from the
	// default 256MiB partition's backup, not a volatile boot.
	writePart(t, img, layout.DataLabel, 1024, make([]byte, 1024))
	vm = boot(t, img)
	expect(t, vm, "ovroot: repaired")
	expect(t, vm, "GUEST: ready")
	if got := guest(t, vm, "cat /etc/precious.txt"); got != "kept\n" {
		t.Errorf("after the repair /etc/precious.txt = %q", got)
	}
	if st := guest(t, vm, "exec /usr/sbin/ovrootctl status"); !strings.Contains(st, "PERSISTENT") || !strings.Contains(st, "repaired at boot") {
		t.Errorf("status after a repair:\n%s", st)
	}
	powerOff(t, vm)
}
