package bench

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/qemu"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"
)

// Knobs (environment): OVROOT_BENCH=1 runs the table; OVROOT_BENCH_BOOTS
// boots of each kind (default 8); OVROOT_BENCH_OUT the file the table is
// written to (default ../out/bench.txt); OVROOT_BENCH_BIG=0 skips the
// 512 MiB tree; OVROOT_BENCH_ONLY=build|boot|reset runs one part.
const (
	markerReal = "bench: real init"
	markerDone = "BENCH-DONE"
)

// row is one line of the table.
type row struct {
	figure   string
	ovroot   string
	baseline string
	ratio    string
	goal     string
	met      string
}

func TestBenchTable(t *testing.T) {
	if os.Getenv("OVROOT_BENCH") == "" {
		t.Skip("the performance table runs under `make bench` (OVROOT_BENCH=1)")
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("the bench boots x86_64 only; it needs an amd64 host for /bin/busybox")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mksquashfs", "mke2fs", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, tool+" not found (make deps)")
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testenv.Missing(t, "/bin/busybox not found (Debian package busybox-static)")
	}
	kdir := filepath.Join(testenv.KernelCache(), "amd64")
	if _, err := os.Stat(filepath.Join(kdir, "vmlinuz")); err != nil {
		testenv.Missing(t, "no amd64 kernel in "+kdir+" (make kernels)")
	}
	started := time.Now()
	work := t.TempDir()
	ovroot := buildTool(t, work)
	var rows []row

	// Build time first: the boots below reuse nothing of it, and the
	// device programs get compiled (and cached) by a warm-up build.
	only := os.Getenv("OVROOT_BENCH_ONLY") // build, boot or reset: one part, while working on it
	var btl []buildTimeline
	if only == "" || only == "build" {
		var br []row
		br, btl = buildRows(t, work, ovroot, kdir)
		rows = append(rows, br...)
	}
	var tl *timelines
	if only == "" || only == "boot" {
		var br []row
		br, tl = bootRows(t, work, ovroot, kdir)
		rows = append(rows, br...)
	}
	if only == "" || only == "reset" {
		rows = append(rows, resetRow(t))
	}

	table := formatTable(rows, started)
	out := os.Getenv("OVROOT_BENCH_OUT")
	if out == "" {
		out = filepath.Join("..", "out", "bench.txt")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if len(btl) > 0 {
		table += "\n" + buildStepsTable(btl)
	}
	if tl != nil {
		svg := filepath.Join(filepath.Dir(out), "handover-timeline.svg")
		if err := os.WriteFile(svg, []byte(tl.svg()), 0o644); err != nil {
			t.Fatal(err)
		}
		table += "\n" + tl.table() + "\nDrawn in " + svg + ".\n"
	}
	if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("table written to %s:\n%s", out, table)
}

// buildTool compiles the host tool as a user gets it (make build).
func buildTool(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "ovroot")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/ovroot")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ovroot: %v\n%s", err, out)
	}
	return bin
}

// run runs a command and returns how long it took.
func run(t *testing.T, name string, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return time.Since(start)
}

// ---- build time ----

func buildRows(t *testing.T, work, ovroot, kdir string) ([]row, []buildTimeline) {
	// Every build is traced (nine lines on stderr); the steps of the
	// plain-tree builds make the build timeline.
	traces := map[string][][]step{}
	build := func(rootfs string, extra ...string) time.Duration {
		img := filepath.Join(work, "build.img")
		defer os.Remove(img)
		args := append([]string{"build", "--trace", "--arch", "x86_64", "--kernel", filepath.Join(kdir, "vmlinuz"),
			"--modules", filepath.Join(kdir, "modules"), "--e2fsck", filepath.Join(kdir, "e2fsck"),
			"--rootfs", rootfs, "-o", img}, extra...)
		start := time.Now()
		out, err := exec.Command(ovroot, args...).CombinedOutput()
		d := time.Since(start)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", ovroot, strings.Join(args, " "), err, out)
		}
		if len(extra) == 0 {
			steps, err := buildSteps(string(out))
			if err != nil {
				t.Fatal(err)
			}
			traces[rootfs] = append(traces[rootfs], steps)
		}
		return d
	}
	plainTimes := map[string][]time.Duration{}
	// Plain mksquashfs with the compression ovroot uses (gzip, its default
	// level and block size) and its default of every processor.
	plain := func(dir string) time.Duration {
		sq := filepath.Join(work, "plain.sqfs")
		defer os.Remove(sq)
		d := run(t, "mksquashfs", dir, sq, "-noappend", "-no-progress", "-quiet", "-comp", "gzip")
		plainTimes[dir] = append(plainTimes[dir], d)
		return d
	}
	// A tarball by plain tools: unpack it, then mksquashfs.
	plainTar := func(tarball string) time.Duration {
		dir := filepath.Join(work, "untar")
		os.RemoveAll(dir)
		os.MkdirAll(dir, 0o755)
		defer os.RemoveAll(dir)
		d := run(t, "tar", "-xzf", tarball, "-C", dir)
		return d + plain(dir)
	}

	// Warm-up (untimed): compiles the device programs and builds the
	// initramfs into their caches, as any second build finds them (the
	// timed builds use the same kernel, modules, e2fsck and config).
	warm := filepath.Join(work, "warm")
	genTree(t, warm, 1<<20, 9)
	build(warm)
	delete(traces, warm)

	small := filepath.Join(work, "tree64")
	genTree(t, small, 64<<20, 1)
	tarball := filepath.Join(work, "tree64.tar.gz")
	writeTarball(t, small, tarball)

	var rows []row
	measure := func(figure string, n int, ours, base func() time.Duration, goal ...string) {
		var o, b []time.Duration
		for i := 0; i < n; i++ { // alternating, baseline first
			b = append(b, base())
			o = append(o, ours())
		}
		mo, mb := median(o), median(b)
		r := row{
			figure:   fmt.Sprintf("%s (median of %d, alternating; programs and initramfs cached)", figure, n),
			ovroot:   fmt.Sprintf("%.2f s %s", mo.Seconds(), spreadDur(o)),
			baseline: fmt.Sprintf("%.2f s %s", mb.Seconds(), spreadDur(b)),
			ratio:    fmt.Sprintf("%.2fx", mo.Seconds()/mb.Seconds()),
			goal:     "≤ 1.0x",
			met:      metStr(mo.Seconds()/mb.Seconds() <= 1.0),
		}
		if len(goal) > 0 { // another goal ("≤ 1.2x"), or a cost to report
			r.goal, r.met = goal[0], "reported"
			if v, ok := strings.CutPrefix(goal[0], "≤ "); ok {
				if limit, err := strconv.ParseFloat(strings.TrimSuffix(v, "x"), 64); err == nil {
					r.met = metStr(mo.Seconds()/mb.Seconds() <= limit)
				}
			}
		}
		rows = append(rows, r)
	}
	measure("`ovroot build` 64 MiB tree vs plain mksquashfs", 5,
		func() time.Duration { return build(small) }, func() time.Duration { return plain(small) })
	measure("`ovroot build --verity` 64 MiB tree vs `ovroot build` (the cost of the hash tree)", 3,
		func() time.Duration { return build(small, "--verity") }, func() time.Duration { return build(small) }, "reported")
	measure("`ovroot build` 64 MiB .tar.gz vs tar -xzf + mksquashfs", 3,
		func() time.Duration { return build(tarball) }, func() time.Duration { return plainTar(tarball) })
	oci, flat := ociBench(t, work)
	measure("`ovroot build` 3-layer OCI image layout, 50k files, vs plain mksquashfs of its flattened tree", 3,
		func() time.Duration { return build(oci) }, func() time.Duration { return plain(flat) }, "≤ 1.2x")
	if os.Getenv("OVROOT_BENCH_BIG") != "0" {
		big := filepath.Join(work, "tree512")
		genTree(t, big, 512<<20, 2)
		measure("`ovroot build` 512 MiB tree vs plain mksquashfs", 2,
			func() time.Duration { return build(big) }, func() time.Duration { return plain(big) })
		os.RemoveAll(big)
	}
	var tls []buildTimeline
	for _, c := range []struct{ dir, name string }{{small, "64 MiB tree"}, {filepath.Join(work, "tree512"), "512 MiB tree"}} {
		if len(traces[c.dir]) == 0 {
			continue
		}
		tls = append(tls, buildTimeline{tree: c.name, steps: medianTimeline(traces[c.dir]), plain: median(plainTimes[c.dir]), n: len(traces[c.dir])})
	}
	return rows, tls
}

// words make the compressible half of the generated files: text that gzip
// shrinks about as much as source code.
var words = strings.Fields(`func return if else for range package import type struct interface
	error nil err string int byte len make append defer go select case switch default
	the a of to in is that for on with as by this be are from at or an not it`)

// genTree writes a deterministic tree of about total bytes: directories of
// 64 entries, files mostly 1–128 KiB with one in 32 of 1–4 MiB, half of
// them text (compressible) and half pseudo-random bytes (not).
func genTree(t *testing.T, dir string, total int64, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x6f76726f6f74))
	var written int64
	buf := make([]byte, 0, 4<<20)
	for i := 0; written < total; i++ {
		size := 1<<10 + rng.IntN(127<<10)
		if i%32 == 31 {
			size = 1<<20 + rng.IntN(3<<20)
		}
		buf = buf[:0]
		if i%2 == 0 {
			for len(buf) < size {
				buf = append(buf, words[rng.IntN(len(words))]...)
				if rng.IntN(12) == 0 {
					buf = append(buf, '\n')
				} else {
					buf = append(buf, ' ')
				}
			}
			buf = buf[:size]
		} else {
			for len(buf)+8 <= size {
				buf = append(buf, byte(rng.Uint64()), byte(rng.Uint64()>>8), byte(rng.Uint64()>>16), byte(rng.Uint64()>>24),
					byte(rng.Uint64()>>32), byte(rng.Uint64()>>40), byte(rng.Uint64()>>48), byte(rng.Uint64()>>56))
			}
		}
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i/4096), fmt.Sprintf("d%03d", i/64%64))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
		written += int64(len(buf))
	}
	// Fixed times, so the trees (and their squashfs) are the same each run.
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			os.Chtimes(p, time.Unix(1700000000, 0), time.Unix(1700000000, 0))
		}
		return nil
	})
}

// writeTarball writes dir as a gzip tarball (default level), owned by root.
func writeTarball(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(rel), 0, 0, "root", "root"
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(data)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// ---- boots ----

// realInit is the rootfs's /sbin/init for both kinds of boot. It marks its
// start in the kernel log first thing, then prints (from dmesg, so the
// console's log level does not matter) the kernel's timestamps of
// "Run /init as init process" and of its own mark, then the mounts that
// prove which root it runs on, and powers off.
const realInit = `#!/bin/busybox sh
echo "` + markerReal + `" > /dev/kmsg
/bin/busybox dmesg | /bin/busybox grep -e 'Run /init as init process' -e '` + markerReal + `' -e 'ovroot: ' -e 'preinit: trace: ' | /bin/busybox sed 's/^/bench-dmesg: /'
/bin/busybox grep -e ' / overlay ' -e ' /rom squashfs ' -e ' /overlay ext4 ' /proc/mounts | /bin/busybox sed 's/^/bench-mount: /'
echo ` + markerDone + `
/bin/busybox sync
/bin/busybox poweroff -f
`

// preinitScript is the shell baseline: the same module files in the same
// order as ovroot's init, the partitions found by PARTLABEL in sysfs, the
// same mounts with the same options, the same switch_root. It marks the
// end of each step in the kernel log at debug level (never on the
// console) as ovroot's init does with ovroot.trace, for the timeline.
const preinitScript = `#!/bin/busybox sh
export PATH=/bin
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
echo '<7>preinit: trace: start' > /dev/kmsg
while read -r m rest; do insmod "$m" || echo "preinit: insmod $m failed"; done < ` + layout.ModuleLoadList + `
echo '<7>preinit: trace: modules' > /dev/kmsg
root= data=
while [ -z "$root" ] || [ -z "$data" ]; do
	for u in /sys/class/block/*/uevent; do
		name= dev=
		while IFS== read -r k v; do
			case $k in PARTNAME) name=$v ;; DEVNAME) dev=$v ;; esac
		done < "$u"
		case $name in ` + layout.RootLabel + `) root=/dev/$dev ;; ` + layout.DataLabel + `) data=/dev/$dev ;; esac
	done
	[ -n "$root" ] && [ -n "$data" ] || usleep 10000
done
echo '<7>preinit: trace: devices' > /dev/kmsg
mount -t squashfs -o ro "$root" /rom
echo '<7>preinit: trace: root' > /dev/kmsg
mount -t ext4 -o noatime "$data" /overlay
echo '<7>preinit: trace: data' > /dev/kmsg
mkdir -p /overlay/upper /overlay/work /newroot
mount -t overlay -o lowerdir=/rom,upperdir=/overlay/upper,workdir=/overlay/work overlay /newroot
echo '<7>preinit: trace: overlay' > /dev/kmsg
mount --move /rom /newroot/rom
mount --move /overlay /newroot/overlay
for d in dev proc sys run; do mount --move /$d /newroot/$d; done
echo '<7>preinit: trace: move' > /newroot/dev/kmsg
exec switch_root /newroot /sbin/init
`

func bootRows(t *testing.T, work, ovroot, kdir string) (rows []row, tl *timelines) {
	rootfs := filepath.Join(work, "bootroot")
	for _, d := range []string{"bin", "sbin", "rom", "overlay", "proc", "sys", "dev", "run", "tmp"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	copyFile(t, "/bin/busybox", filepath.Join(rootfs, "bin/busybox"), 0o755)
	if err := os.WriteFile(filepath.Join(rootfs, "sbin/init"), []byte(realInit), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(work, "boot.img")
	// The defaults (emergency shell, e2fsck, 256 MiB data partition): the
	// initramfs a user gets.
	run(t, ovroot, "build", "--arch", "x86_64", "--kernel", filepath.Join(kdir, "vmlinuz"),
		"--modules", filepath.Join(kdir, "modules"), "--e2fsck", filepath.Join(kdir, "e2fsck"),
		"--data-size", "256MiB", "--rootfs", rootfs, "-o", img)
	cfg, cleanup, err := qemu.ForImage(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	cfg.Cmdline += " printk.time=1 ovroot.trace"
	// The same root with a verity tree: what checking every block costs.
	vimg := filepath.Join(work, "boot-verity.img")
	run(t, ovroot, "build", "--arch", "x86_64", "--kernel", filepath.Join(kdir, "vmlinuz"),
		"--modules", filepath.Join(kdir, "modules"), "--e2fsck", filepath.Join(kdir, "e2fsck"),
		"--data-size", "256MiB", "--rootfs", rootfs, "-o", vimg, "--verity")
	vCfg, vcleanup, err := qemu.ForImage(vimg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vcleanup)
	vCfg.Cmdline += " printk.time=1"
	vCfg.CPUs = int(testenv.Int(t, "OVROOT_BENCH_SMP", 1, 1))
	// OVROOT_BENCH_SMP: the guest's CPUs (1 by default), for the modules
	// the init loads in parallel.
	cfg.CPUs = int(testenv.Int(t, "OVROOT_BENCH_SMP", 1, 1))
	ovCfg := cfg
	preCfg := cfg
	preCfg.Initrd = filepath.Join(work, "preinit.img")
	buildPreinit(t, cfg.Initrd, preCfg.Initrd)

	ovBytes, preBytes := fileSize(t, cfg.Initrd), fileSize(t, preCfg.Initrd)
	rows = append(rows, row{
		figure:   "initramfs bytes: ovroot default (init, shell, e2fsck, modules) vs busybox preinit (busybox, same modules), both gzip at its default level",
		ovroot:   fmt.Sprintf("%.2f MiB", float64(ovBytes)/(1<<20)),
		baseline: fmt.Sprintf("%.2f MiB", float64(preBytes)/(1<<20)),
		ratio:    fmt.Sprintf("%.2fx", float64(ovBytes)/float64(preBytes)),
		goal:     "≤ 4 MiB",
		met:      metStr(ovBytes <= 4<<20),
	})

	// First boot: ovroot formats the data partition.
	first := bootOnce(t, ovCfg, "ovroot first boot")
	fmtMS := -1.0
	if m := regexp.MustCompile(`ovroot: formatted \S+ as \S+ in (\d+) ms`).FindStringSubmatch(first); m != nil {
		fmtMS, _ = strconv.ParseFloat(m[1], 64)
	} else {
		t.Errorf("first boot did not log the format time (ovroot: formatted DEV as ext4 in N ms)")
	}
	hostFmt := hostMke2fs(t, work, 256<<20)

	n := int(testenv.Int(t, "OVROOT_BENCH_BOOTS", 8, 1))
	var ov, pre, ver []float64
	var rssKB []float64
	var ovSteps, preSteps [][]step
	bootOnce(t, vCfg, "ovroot verity first boot") // formats its data partition
	for i := 0; i < n; i++ {
		c := bootOnce(t, ovCfg, fmt.Sprintf("ovroot boot %d", i+1))
		ov = append(ov, handOver(t, c))
		ovSteps = append(ovSteps, mustTimeline(t, c))
		logInitTimes(t, c)
		if m := regexp.MustCompile(`ovroot: init peak memory: (\d+) kB`).FindStringSubmatch(c); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			rssKB = append(rssKB, v)
		}
		c = bootOnce(t, preCfg, fmt.Sprintf("preinit boot %d", i+1))
		pre = append(pre, handOver(t, c))
		preSteps = append(preSteps, mustTimeline(t, c))
		if i%2 == 0 {
			c = bootOnce(t, vCfg, fmt.Sprintf("ovroot verity boot %d", i/2+1))
			ver = append(ver, handOver(t, c))
		}
	}
	mo, mp := median(ov), median(pre)
	smp := ""
	if cfg.CPUs > 1 {
		smp = fmt.Sprintf(", -smp %d", cfg.CPUs)
	}
	rows = append(rows, row{
		figure:   fmt.Sprintf("`Run /init` → real init's first line, data formatted (median of %d alternating boots each%s)", n, smp),
		ovroot:   fmt.Sprintf("%.3f s %s", mo, spreadF(ov)),
		baseline: fmt.Sprintf("%.3f s %s", mp, spreadF(pre)),
		ratio:    fmt.Sprintf("%.2fx", mo/mp),
		goal:     "≤ 1.0x",
		met:      metStr(mo/mp <= 1.0),
	})
	tl = &timelines{ovroot: medianTimeline(ovSteps), preinit: medianTimeline(preSteps), boots: n}
	mv := median(ver)
	rows = append(rows, row{
		figure:   fmt.Sprintf("the same hand-over with `--verity` (every block of the %s root read and checked) vs without (median of %d and %d)", "busybox", len(ver), n),
		ovroot:   fmt.Sprintf("%.3f s %s", mv, spreadF(ver)),
		baseline: fmt.Sprintf("%.3f s", mo),
		ratio:    fmt.Sprintf("%.2fx", mv/mo),
		goal:     "reported",
		met:      "reported",
	})
	fr := row{
		figure:   "first-boot format of the 256 MiB data partition (init's log line, in the guest) vs host mke2fs -E lazy_itable_init=1 (native, not TCG)",
		baseline: fmt.Sprintf("%.3f s", hostFmt.Seconds()),
		goal:     "≤ 0.3 s",
	}
	if fmtMS >= 0 {
		fr.ovroot = fmt.Sprintf("%.3f s", fmtMS/1000)
		fr.ratio = fmt.Sprintf("%.1fx", fmtMS/1000/hostFmt.Seconds())
		fr.met = metStr(fmtMS/1000 <= 0.3)
	} else {
		fr.ovroot, fr.ratio, fr.met = "n/a", "n/a", "n/a"
	}
	rows = append(rows, fr)
	rr := row{figure: "peak RSS of the init (VmHWM it logs before switch_root)", baseline: "—", ratio: "—", goal: "reported"}
	if len(rssKB) > 0 {
		rr.ovroot = fmt.Sprintf("%.1f MiB", median(rssKB)/1024)
		rr.met = "reported"
	} else {
		rr.ovroot, rr.met = "n/a (the init does not log VmHWM)", "n/a"
	}
	rows = append(rows, rr)
	return rows, tl
}

// bootOnce boots cfg, waits for the real init to power off, checks that it
// ran on the overlay root (squashfs at /rom, ext4 at /overlay, the overlay
// at /) and returns the console.
func bootOnce(t *testing.T, cfg qemu.Config, what string) string {
	t.Helper()
	vm, err := qemu.Start(context.Background(), cfg, qemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	if _, err := vm.Expect(3*time.Minute, markerDone); err != nil {
		t.Fatalf("%s: %v\nQEMU: %s\nconsole tail:\n%s", what, err, cfg.CommandLine(), vm.Tail(40))
	}
	if err := vm.Wait(time.Minute); err != nil {
		t.Fatalf("%s: power-off: %v", what, err)
	}
	c := vm.Console()
	rom := "bench-mount: /dev/vda2 /rom squashfs ro"
	if strings.Contains(cfg.Cmdline, "ovroot.verity=") {
		rom = "bench-mount: /dev/dm-0 /rom squashfs ro"
	}
	for _, want := range []string{
		"bench-mount: overlay / overlay ",
		"lowerdir=/rom,upperdir=/overlay/upper,workdir=/overlay/work",
		rom,
		"bench-mount: /dev/vda3 /overlay ext4 rw",
	} {
		if !strings.Contains(c, want) {
			t.Fatalf("%s: the real init did not run on the overlay root: no %q on the console\nQEMU: %s\nconsole tail:\n%s", what, want, cfg.CommandLine(), vm.Tail(40))
		}
	}
	return c
}

// logInitTimes logs, for one ovroot boot, the kernel timestamps of the
// init's lines relative to `Run /init` (the first one is the Go runtime's
// start-up and the pseudo file systems) and its timing lines.
func logInitTimes(t *testing.T, console string) {
	t.Helper()
	a := reRunInitTS.FindStringSubmatch(console)
	if a == nil {
		return
	}
	start, _ := strconv.ParseFloat(a[1], 64)
	for _, m := range reInitLine.FindAllStringSubmatch(console, -1) {
		ts, _ := strconv.ParseFloat(m[1], 64)
		if strings.Contains(m[2], "modules") || strings.Contains(m[2], "ready") || strings.Contains(m[2], "switching") {
			t.Logf("+%.3f s %s", ts-start, m[2])
		}
	}
	if m := reInitLine.FindStringSubmatch(console); m != nil {
		ts, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("+%.3f s first init line: %s", ts-start, m[2])
	}
}

var reInitLine = regexp.MustCompile(`bench-dmesg: \[\s*([0-9.]+)\] (ovroot: [^\r\n]*)`)

// handOver is the kernel's time from running /init to the real init's mark.
func handOver(t *testing.T, console string) float64 {
	t.Helper()
	a, b := reRunInitTS.FindStringSubmatch(console), reRealTS.FindStringSubmatch(console)
	if a == nil || b == nil {
		t.Fatalf("no kernel timestamps for `Run /init` and %q on the console", markerReal)
	}
	x, _ := strconv.ParseFloat(a[1], 64)
	y, _ := strconv.ParseFloat(b[1], 64)
	return y - x
}

// buildPreinit writes the busybox preinit: /bin/busybox and its applets'
// links, the module files and load list copied out of ovroot's initramfs
// (same files, same order), /init, gzip at the default level as ovroot's.
func buildPreinit(t *testing.T, ovInitrd, out string) {
	t.Helper()
	raw, err := os.ReadFile(ovInitrd)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decompress(raw)
	if err != nil {
		t.Fatalf("ovroot initramfs %s: %v", ovInitrd, err)
	}
	files := map[string]cpio.Record{}
	rr := cpio.Newc.Reader(bytes.NewReader(r))
	var load string
	mods := map[string][]byte{}
	if err := cpio.ForEachRecord(rr, func(rec cpio.Record) error {
		name := "/" + strings.TrimPrefix(rec.Name, "/")
		if rec.Mode&cpio.S_IFMT != cpio.S_IFREG || !strings.HasPrefix(name, "/lib/modules/") {
			return nil
		}
		data, err := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
		if err != nil {
			return err
		}
		if name == layout.ModuleLoadList {
			load = string(data)
		} else {
			mods[name] = data
		}
		return nil
	}); err != nil {
		t.Fatalf("read ovroot initramfs %s: %v", ovInitrd, err)
	}
	if strings.TrimSpace(load) == "" {
		t.Fatalf("ovroot initramfs %s carries no %s", ovInitrd, layout.ModuleLoadList)
	}
	add := func(r cpio.Record) { files[r.Name] = r }
	sc := bufio.NewScanner(strings.NewReader(load))
	for sc.Scan() {
		f := strings.Fields(sc.Text()) // the path, then what the init schedules by
		if len(f) == 0 {
			continue
		}
		p := f[0]
		data, ok := mods[p]
		if !ok {
			t.Fatalf("module %s listed in %s is not in the initramfs", p, layout.ModuleLoadList)
		}
		add(cpio.StaticFile(strings.TrimPrefix(p, "/"), string(data), 0o644))
	}
	add(cpio.StaticFile(strings.TrimPrefix(layout.ModuleLoadList, "/"), load, 0o644))
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	add(cpio.StaticFile("bin/busybox", string(bb), 0o755))
	for _, a := range []string{"sh", "mount", "insmod", "mkdir", "switch_root", "usleep"} {
		add(cpio.Symlink("bin/"+a, "busybox"))
	}
	add(cpio.StaticFile("init", preinitScript, 0o755))
	add(cpio.CharDev("dev/console", 0o600, 5, 1))
	for _, d := range []string{"dev", "proc", "sys", "run", "rom", "overlay", "newroot", "bin", "lib", "lib/modules"} {
		add(cpio.Directory(d, 0o755))
	}
	for name := range files {
		for d := filepath.Dir(name); d != "." && d != "/"; d = filepath.Dir(d) {
			if _, ok := files[d]; !ok {
				add(cpio.Directory(d, 0o755))
			}
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, _ := gzip.NewWriterLevel(f, gzip.DefaultCompression)
	w := cpio.Newc.Writer(gz)
	for i, n := range names {
		rec := cpio.MakeReproducible(files[n])
		rec.Ino = uint64(i + 1)
		if err := w.WriteRecord(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
}

// decompress undoes whichever compression ovroot's initramfs has.
func decompress(b []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		r, err := xz.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		r, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	return b, nil
}

// hostMke2fs times mke2fs with lazy inode tables on a sparse file of size
// bytes (median of 3).
func hostMke2fs(t *testing.T, work string, size int64) time.Duration {
	t.Helper()
	var d []time.Duration
	for i := 0; i < 3; i++ {
		p := filepath.Join(work, "mke2fs.img")
		os.Remove(p)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		d = append(d, run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=1,lazy_journal_init=1", p))
		os.Remove(p)
	}
	return median(d)
}

// ---- reset ----

var reMetric = regexp.MustCompile(`([0-9.]+) (ms/reset-1k|ms/reset-100k|ratio-100k/1k)`)

// resetRow runs the existing BenchmarkResetScaling and reports the 100k
// reset against the 1k one.
func resetRow(t *testing.T) row {
	cmd := exec.Command("go", "test", "-count=1", "-run", "^$", "-bench", "^BenchmarkResetScaling$", "-benchtime", "3x", "../reset/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("BenchmarkResetScaling: %v\n%s", err, out)
	}
	m := map[string]float64{}
	for _, s := range reMetric.FindAllStringSubmatch(string(out), -1) {
		m[s[2]], _ = strconv.ParseFloat(s[1], 64)
	}
	if len(m) != 3 {
		t.Fatalf("BenchmarkResetScaling printed no metrics:\n%s", out)
	}
	return row{
		figure:   "factory reset, 100k-entry upper vs 1k-entry upper (BenchmarkResetScaling, host)",
		ovroot:   fmt.Sprintf("%.1f ms", m["ms/reset-100k"]),
		baseline: fmt.Sprintf("%.1f ms", m["ms/reset-1k"]),
		ratio:    fmt.Sprintf("%.2fx", m["ratio-100k/1k"]),
		goal:     "— (kept; the reset renames the upper aside)",
		met:      "reported",
	}
}

// ---- helpers ----

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func metStr(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// median is the middle run (the mean of the two middle ones for an even
// count), of durations or of seconds.
func median[T time.Duration | float64](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spreadF is the range of the runs, "[min–max]".
func spreadF(v []float64) string {
	return fmt.Sprintf("[%.3f–%.3f]", slices.Min(v), slices.Max(v))
}

func spreadDur(d []time.Duration) string {
	if len(d) == 1 {
		return "(1 run)"
	}
	return fmt.Sprintf("[%.2f–%.2f]", slices.Min(d).Seconds(), slices.Max(d).Seconds())
}

func formatTable(rows []row, started time.Time) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "ovroot bench (%s, %d CPUs, %s, QEMU TCG x86_64 q35; %s; bench took %s)\n\n",
		cpuModel(), runtime.NumCPU(), kernelRelease(), host, time.Since(started).Round(time.Second))
	fmt.Fprintln(&b, "| figure | ovroot | baseline | ratio | goal | |")
	fmt.Fprintln(&b, "| --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.figure, r.ovroot, r.baseline, r.ratio, r.goal, r.met)
	}
	return b.String()
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernelRelease() string {
	data, err := os.ReadFile(filepath.Join(testenv.KernelCache(), "amd64", "release"))
	if err != nil {
		return "guest kernel unknown"
	}
	return "guest kernel " + strings.TrimSpace(string(data))
}

// mustTimeline is the steps of one boot's console (parseTimeline).
func mustTimeline(t *testing.T, console string) []step {
	t.Helper()
	steps, err := parseTimeline(console)
	if err != nil {
		t.Fatal(err)
	}
	return steps
}
