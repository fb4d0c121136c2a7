package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/imagebuild"
	"github.com/ovroot/ovroot/internal/gobuild"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
)

// Every QEMU test calls t.Parallel() first, and so does each of its
// per-arch subtests: go test then runs any two subtests of any tests at
// once (-parallel is GOMAXPROCS, the cores), so one test's long x86_64 run
// overlaps another test's instead of leaving a core idle until the
// slowest subtest of each test is done. A test whose steps depend on each
// other keeps them in one subtest; a test with independent boots (the
// grow power cuts) makes each its own parallel subtest.
//
// Timeouts are generous: TCG on a shared two-core machine is slow and noisy.
const (
	bootTimeout    = 3 * time.Minute
	commandTimeout = 2 * time.Minute
)

// Which arches each test boots. Every arch ovroot supports proves, in the
// walking skeleton (TestBoot) and a factory reset, that its kernel, its
// modules and its cross-compiled programs boot and keep data. The
// expensive tests (power-cut campaign, faults, terminal, the installed
// binary, reset power cuts) run on testArches only: the init is the same Go
// code on every arch, and TCG boots of 32-bit ARM on top would not fit the
// suite in its time.
var (
	// allArches is every arch ovroot supports.
	allArches = layout.Arches
	// testArches run the expensive tests.
	testArches = []layout.Arch{layout.X86_64, layout.ARM64}
	// otherArches are allArches minus testArches: they run the cheap
	// checks that testArches cover inside the expensive tests.
	otherArches = except(allArches, testArches)
)

func except(all, drop []layout.Arch) []layout.Arch {
	var out []layout.Arch
	for _, a := range all {
		if !slices.Contains(drop, a) {
			out = append(out, a)
		}
	}
	return out
}

// requireTools skips (or, under `make test`, fails) when the tests cannot run.
func requireTools(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU boot test: skipped with -short")
	}
	var missing []string
	for _, tool := range []string{"qemu-system-x86_64", "qemu-system-aarch64", "qemu-system-arm", "mksquashfs", "e2fsck", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, a := range layout.Arches {
		if _, err := os.Stat(filepath.Join(kernelCache(), a.DebianArch(), "vmlinuz")); err != nil {
			missing = append(missing, "kernel "+a.DebianArch()+" in "+kernelCache())
		}
		if _, err := os.Stat(filepath.Join(kernelCache(), a.DebianArch(), "e2fsck")); err != nil {
			missing = append(missing, "e2fsck-static "+a.DebianArch()+" in "+kernelCache())
		}
	}
	if len(missing) == 0 {
		return
	}
	testenv.Missing(t, fmt.Sprintf("QEMU boot test needs %s (run `make kernels`, or `make test`)", strings.Join(missing, ", ")))
}

func kernelCache() string { return testenv.KernelCache() }

// buildHostTool builds the ovroot binary into a temp dir, for tests that
// run it as a person does.
func buildHostTool(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ovroot")
	build := exec.Command("go", "build", "-o", bin, "./cmd/ovroot")
	build.Dir = sourceDir(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ovroot: %v\n%s", err, out)
	}
	return bin
}

func sourceDir(t *testing.T) string {
	t.Helper()
	d, err := gobuild.FindSource(".")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// guestBinaries builds the guest agent and ovrootctl once per arch.
var (
	guestOnce sync.Map // arch -> *guestBuild
)

type guestBuild struct {
	once sync.Once
	dir  string
	err  error
}

func buildGuest(t *testing.T, arch layout.Arch) (agent, ctl string) {
	t.Helper()
	v, _ := guestOnce.LoadOrStore(arch, &guestBuild{})
	g := v.(*guestBuild)
	g.once.Do(func() {
		g.dir, g.err = os.MkdirTemp("", "ovroot-guest-"+string(arch)+"-")
		if g.err != nil {
			return
		}
		ctx := context.Background()
		if g.err = gobuild.Build(ctx, arch, sourceDir(t), filepath.Join(g.dir, "guest"), "./integration/guest"); g.err != nil {
			return
		}
		g.err = gobuild.Build(ctx, arch, sourceDir(t), filepath.Join(g.dir, "ovrootctl"), "./cmd/ovrootctl")
	})
	if g.err != nil {
		t.Fatalf("build guest programs for %s: %v", arch, g.err)
	}
	return filepath.Join(g.dir, "guest"), filepath.Join(g.dir, "ovrootctl")
}

// image describes a disk image built for a test.
type image struct {
	arch layout.Arch
	path string
}

// buildImage builds a disk image of rootfs with the host tool's own code
// path (imagebuild.BuildImage: initramfs + GPT image), with Debian's kernel.
func buildImage(t *testing.T, arch layout.Arch, rootfs string, edit func(*config.Image)) image {
	t.Helper()
	return buildImageOpts(t, arch, rootfs, imagebuild.Options{}, edit)
}

// buildImageOpts is buildImage with build options (a prebuilt test init).
func buildImageOpts(t *testing.T, arch layout.Arch, rootfs string, o imagebuild.Options, edit func(*config.Image)) image {
	t.Helper()
	k := filepath.Join(kernelCache(), arch.DebianArch())
	im := config.DefaultImage(arch)
	im.Kernel = filepath.Join(k, "vmlinuz")
	im.ModulesDir = filepath.Join(k, "modules")
	im.Rootfs = rootfs
	im.E2fsck = filepath.Join(k, "e2fsck")
	im.DataSize = 128 << 20
	im.EmergencyShell = false // 5 MB less to unpack at every boot; the emergency test turns it on
	if edit != nil {
		edit(im)
	}
	if err := im.Validate(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "disk.img")
	o.Log = t.Logf
	if _, err := imagebuild.BuildImage(context.Background(), im, out, o); err != nil {
		t.Fatalf("build image: %v", err)
	}
	return image{arch: arch, path: out}
}

// boot starts QEMU on the image with its recorded kernel, initramfs and
// command line, logging the console to a file kept on failure.
func boot(t *testing.T, img image, opts ...bootOpt) *qemu.VM {
	t.Helper()
	cfg, cleanup, err := qemu.ForImage(img.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	for _, o := range opts {
		o(&cfg)
	}
	return startVM(t, img, cfg)
}

// startVM starts QEMU with cfg, logging the console to a file kept on
// failure.
func startVM(t *testing.T, img image, cfg qemu.Config) *qemu.VM {
	t.Helper()
	if cfg.Arch != img.arch {
		t.Fatalf("image records arch %s, built for %s", cfg.Arch, img.arch)
	}
	logf, err := os.CreateTemp("", "ovroot-console-"+string(img.arch)+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := qemu.Start(context.Background(), cfg, qemu.Options{Console: logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		logf.Close()
		if t.Failed() {
			t.Logf("console log kept in %s; QEMU: %s", logf.Name(), cfg.CommandLine())
		} else {
			os.Remove(logf.Name())
		}
	})
	return vm
}

// bootOpt changes how one boot runs.
type bootOpt func(*qemu.Config)

// withCmdline appends kernel parameters for this boot only.
func withCmdline(params string) bootOpt {
	return func(c *qemu.Config) { c.Cmdline += " " + params }
}

// withKeyboard adds a virtio keyboard the test presses through QMP at sock.
func withKeyboard(sock string) bootOpt {
	return func(c *qemu.Config) {
		c.Extra = append(c.Extra, "-device", "virtio-keyboard-pci")
		c.QMP = sock
	}
}

// expect waits for a console line or fails the test with the console tail.
func expect(t *testing.T, vm *qemu.VM, substr string) string {
	t.Helper()
	line, err := vm.Expect(bootTimeout, substr)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

var doneRE = regexp.MustCompile(`(\d+)(?: err=([^\n]*))?\n`)

// guest runs one agent command in the VM and returns its output exactly as
// the command wrote it (a file's trailing newline included); a command
// that fails in the guest fails the test.
func guest(t *testing.T, vm *qemu.VM, command string) string {
	t.Helper()
	out, err := guestErr(vm, command)
	if err != nil {
		t.Fatalf("guest %q: %v", command, err)
	}
	return out
}

func guestErr(vm *qemu.VM, command string) (string, error) {
	if err := vm.Send(command); err != nil {
		return "", err
	}
	if _, err := vm.Expect(commandTimeout, "GUEST-OUT"); err != nil {
		return "", err
	}
	body, err := vm.ReadUntil(commandTimeout, "GUEST-DONE rc=")
	if err != nil {
		return "", err
	}
	m, err := vm.ExpectRegexp(commandTimeout, doneRE)
	if err != nil {
		return "", err
	}
	body = strings.TrimPrefix(strings.TrimSuffix(body, "\n"), "\n")
	if m[1] != "0" {
		return body, fmt.Errorf("failed in the guest: %s", m[2])
	}
	return body, nil
}

// powerOff asks the guest to power off and waits for QEMU to exit.
func powerOff(t *testing.T, vm *qemu.VM) {
	t.Helper()
	if err := vm.Send("poweroff"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(bootTimeout); err != nil {
		t.Fatalf("guest did not power off: %v", err)
	}
}

// partRange is where a partition of an image lies, in bytes.
func partRange(t *testing.T, img image, label string) (start, size int64) {
	t.Helper()
	parts, err := imagebuild.ListPartitions(img.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if p.Label == label {
			return p.Start, p.Size
		}
	}
	t.Fatalf("no partition %s in %s", label, img.path)
	return 0, 0
}

// partition copies one partition of an image into its own file.
func partition(t *testing.T, img image, label string) string {
	t.Helper()
	start, size := partRange(t, img, label)
	src, err := os.Open(img.path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := filepath.Join(t.TempDir(), label+".img")
	dst, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, io.NewSectionReader(src, start, size)); err != nil {
		t.Fatal(err)
	}
	return out
}

// fsckFindings are e2fsck -n answers to questions it would fix ("Fix? no",
// "Recreate? no", ...) and a journal it did not replay.
var fsckFindings = regexp.MustCompile(`(?m)\? no$|skipping journal recovery`)

// fsck runs the host's e2fsck read-only on a partition and fails on any
// finding.
func fsck(t *testing.T, img image, label string) {
	t.Helper()
	p := partition(t, img, label)
	out, err := exec.Command("e2fsck", "-fn", p).CombinedOutput()
	// e2fsck -n exits 0 on some findings it would fix (summary counts) and
	// on a journal it skipped: those are failures here too.
	if err == nil && fsckFindings.Match(out) {
		err = fmt.Errorf("findings in read-only mode")
	}
	if err != nil {
		t.Fatalf("e2fsck -fn on %s of %s: %v\n%s", label, img.path, err, out)
	}
	t.Logf("e2fsck -fn %s: clean\n%s", label, out)
}

// fsckFAT runs fsck.fat -n on the image's boot partition and fails the
// test on any finding but a stale free-cluster count in FSInfo: advisory
// (the kernel finds free clusters in the FAT), and U-Boot's fatwrite,
// which creates the A/B boot markers, does not update it.
func fsckFAT(t *testing.T, img image) {
	t.Helper()
	if findings, out := fatFindings(t, img); len(findings) > 0 {
		t.Fatalf("fsck.fat -n on %s of %s: %s\n%s", layout.BootLabel, img.path, strings.Join(findings, "; "), out)
	}
	t.Logf("fsck.fat -n %s: clean", layout.BootLabel)
}

// fatFindings is what fsck.fat -n says is wrong with the image's boot
// partition (a stale FSInfo free count aside), and its whole output.
func fatFindings(t *testing.T, img image) (findings []string, out string) {
	t.Helper()
	tool, err := exec.LookPath("fsck.fat")
	if err != nil {
		tool = "/usr/sbin/fsck.fat"
	}
	b, err := exec.Command(tool, "-n", partition(t, img, layout.BootLabel)).CombinedOutput()
	out = string(b)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "fsck.fat "), strings.Contains(l, " files, ") && strings.HasSuffix(l, " clusters"),
			l == "Leaving filesystem unchanged.", l == "":
		case strings.HasPrefix(l, "Free cluster summary"):
			if i+1 < len(lines) && strings.TrimSpace(lines[i+1]) == "Auto-correcting." {
				i++
			}
		default:
			findings = append(findings, strings.TrimSpace(l))
		}
	}
	var exit *exec.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 1) {
		findings = append(findings, err.Error())
	}
	return findings, out
}
