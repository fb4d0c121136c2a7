package integration

import (
	"archive/tar"
	"encoding/binary"
	"encoding/json"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/ovroot/ovroot/internal/testenv"
	"github.com/ovroot/ovroot/qemu"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/internal/manifest"
	ovlayout "github.com/ovroot/ovroot/layout"
)

// The layers a stacked test image puts on top of its container image
// (image.toml [[layer]]: base, app, config). app deletes a file of the
// base with a whiteout and hides a directory's base files with an opaque
// marker; config overrides a file app overrides too, and deletes one app
// added: each whiteout hides what the layers below hold, and the top layer
// wins.
var (
	// Each lists the directories it puts files in, as docker's layers do:
	// on the device a directory's owner and mode are the top layer's
	// that has it (an implied one would be root's, 0755: the build
	// warns).
	stackApp = []layerEntry{
		{h: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{h: tar.Header{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{h: tar.Header{Name: "usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{h: tar.Header{Name: "home/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{h: tar.Header{Name: "etc/.wh.labelled", Typeflag: tar.TypeReg}},
		{h: tar.Header{Name: "home/alice/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}},
		{h: tar.Header{Name: "home/alice/.wh..wh..opq", Typeflag: tar.TypeReg}},
		{h: tar.Header{Name: "home/alice/app-only", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1000}, body: "app's\n"},
		{h: tar.Header{Name: strings.TrimPrefix(factoryConf, "/"), Typeflag: tar.TypeReg, Mode: 0o644}, body: "app=1\n"},
		{h: tar.Header{Name: "etc/app.conf", Typeflag: tar.TypeReg, Mode: 0o644}, body: "from app\n"},
		{h: tar.Header{Name: "etc/app.old", Typeflag: tar.TypeReg, Mode: 0o644}, body: "old\n"},
		{h: tar.Header{Name: "usr/bin/app-tool", Typeflag: tar.TypeReg, Mode: 0o4755,
			PAXRecords: map[string]string{"SCHILY.xattr.user.layer": "app"}}, body: "#!/bin/sh\n"},
	}
	stackConfig = []layerEntry{
		{h: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o750, Gid: 10}},
		{h: tar.Header{Name: strings.TrimPrefix(factoryConf, "/"), Typeflag: tar.TypeReg, Mode: 0o600}, body: "config=1\n"},
		{h: tar.Header{Name: "etc/.wh.app.old", Typeflag: tar.TypeReg}},
	}
)

// layerTarball writes a layer's entries as a tarball file.
func layerTarball(t *testing.T, entries []layerEntry) string {
	t.Helper()
	rc, err := tarLayer(t, entries).Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	p := filepath.Join(t.TempDir(), "layer.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return p
}

// testStackedLayers boots an image of three [[layer]]s, the bottom one
// the container image (rootfs) testImageRootfs made: the guest's /rom is a
// read-only overlay of the three layer squashfs, each mounted from its
// bytes of the root partition, and its merged root equals the flatten
// go-containerregistry computes on the host of the image with the two
// layers appended. Then ovrootctl changes reads the stacked /rom.
func testStackedLayers(t *testing.T, arch ovlayout.Arch, rootfs string) {
	img := containerImage(t, arch)
	stacked, err := mutate.AppendLayers(img, tarLayer(t, stackApp), tarLayer(t, stackConfig))
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(stacked)
	factory, err := manifest.FromTar(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	im := buildImage(t, arch, "", func(im *config.Image) {
		im.Layer = []config.Layer{
			{Name: "base", Rootfs: rootfs},
			{Name: "app", Rootfs: layerTarball(t, stackApp)},
			{Name: "config", Rootfs: layerTarball(t, stackConfig)},
		}
	})
	vm := boot(t, im)
	expect(t, vm, "GUEST: ready")
	checkFactoryFull(t, vm, factory, path.Dir(ovlayout.LayersFile)) // etc/ovroot: ovroot's own
	// /rom itself, the merged layers: the same tree, its mount points
	// empty there.
	checkTreeFull(t, vm, ovlayout.RomDir, factory, path.Dir(ovlayout.LayersFile))
	for _, c := range []struct{ cmd, want string }{
		{"cat " + factoryConf, "config=1\n"},
		{"exists /etc/labelled", "/etc/labelled exists=false\n"},
		{"exists /etc/app.old", "/etc/app.old exists=false\n"},
		{"cat /etc/app.conf", "from app\n"},
		{"exists /home/alice/fresh", "/home/alice/fresh exists=false\n"},
		{"cat /home/alice/app-only", "app's\n"},
		{"getxattr /usr/bin/app-tool user.layer", "app\n"},
	} {
		if got := guest(t, vm, c.cmd); got != c.want {
			t.Errorf("%s = %q, want %q", c.cmd, got, c.want)
		}
	}
	var table ovlayout.LayerTable
	if err := json.Unmarshal([]byte(guest(t, vm, "cat /"+ovlayout.LayersFile)), &table); err != nil || len(table.Layers) != 3 ||
		table.Layers[0].Name != "base" || table.Layers[1].Name != "app" || table.Layers[2].Name != "config" {
		t.Errorf("/%s = %+v (%v), want base, app, config", ovlayout.LayersFile, table, err)
	}
	mounts := guest(t, vm, "mounts")
	lowers := "lowerdir=/run/ovroot/layers/config:/run/ovroot/layers/app:/run/ovroot/layers/base"
	for _, name := range []string{"base", "app", "config"} {
		// Each from a device-mapper mapping of its bytes of the root.
		if !regexp.MustCompile(`(?m)^/dev/dm-\d+ /run/ovroot/layers/` + name + ` squashfs ro,`).MatchString(mounts) {
			t.Errorf("layer %s is not mounted read-only from a mapping:\n%s", name, mounts)
		}
	}
	var rom, root bool
	for _, l := range strings.Split(mounts, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[2] != "overlay" || !strings.Contains(f[3], lowers+",") && !strings.HasSuffix(f[3], lowers) {
			continue
		}
		switch f[1] {
		case "/rom":
			rom = strings.HasPrefix(f[3], "ro,")
		case "/":
			root = strings.Contains(f[3], "upperdir=")
		}
	}
	if !rom || !root {
		t.Errorf("want /rom a read-only overlay and / an overlay with an upper, both of %s:\n%s", lowers, mounts)
	}
	if st := guest(t, vm, "exec /usr/bin/ovrootctl status"); !strings.Contains(st, "layers:    config, app, base (top first") {
		t.Errorf("ovrootctl status does not list the layers:\n%s", st)
	}
	// ovrootctl changes reads the stacked /rom as the factory tree.
	guest(t, vm, "write /etc/added by-hand")
	guest(t, vm, "rm /etc/app.conf")
	changes := guest(t, vm, "exec /usr/bin/ovrootctl changes")
	for _, w := range []string{"A /etc/added", "D /etc/app.conf"} {
		if !strings.Contains(changes, w) {
			t.Errorf("ovrootctl changes = %q, want %q in it", changes, w)
		}
	}
	backupResetRestore(t, vm, im, factory)

	// The app layer's superblock zeroed on the disk: the init names the
	// layer and tries again, as for a root that does not mount, with
	// nothing of the stack left mounted between the attempts.
	sb := readPart(t, im, ovlayout.RootLabel, 0, 48)
	appAt := ovlayout.LayersStart(int64(binary.LittleEndian.Uint64(sb[40:])))
	writePart(t, im, ovlayout.RootLabel, appAt, make([]byte, 4096))
	vm = boot(t, im)
	expect(t, vm, "ovroot: cannot build a root (attempt 1): layer app: mount /dev/dm-")
	expect(t, vm, "ovroot: cannot build a root (attempt 2): layer app")
	vm.Kill()
}

// backupResetRestore: the device's changes (a file added, one of a layer
// deleted, an xattr) are backed up with ovrootctl backup, a factory reset
// gives the factory tree, and ovrootctl restore, cut by a power cut at a
// seeded moment of its boot-time steps, gives on the next boot exactly
// the tree that was backed up (host-compared manifests: never a mix).
func backupResetRestore(t *testing.T, vm *qemu.VM, im image, factory []manifest.Entry) {
	seed := testenv.Int(t, "OVROOT_RESTORE_SEED", time.Now().UnixNano(), 0)
	rng := rand.New(rand.NewSource(seed))
	guest(t, vm, "mkdir /etc/custom")
	guest(t, vm, "write /etc/custom/site.conf customer's")
	guest(t, vm, "setxattr /etc/custom/site.conf user.site yes")
	skips := []string{"proc", "sys", "dev", "run", "tmp", "rom", "overlay", "etc/ovroot"}
	rootManifest := func(vm *qemu.VM) string {
		t.Helper()
		out := guest(t, vm, "manifest-v2 / "+strings.Join(skips, " "))
		return regexp.MustCompile(`manifest-v2 entries=\d+ digest=[0-9a-f]+`).FindString(out)
	}
	before := rootManifest(vm)
	if out := guest(t, vm, "exec /usr/bin/ovrootctl backup -o /overlay/backup.tar"); strings.Contains(out, "rror") {
		t.Fatalf("ovrootctl backup: %s", out)
	}
	guest(t, vm, "exec /usr/bin/ovrootctl factory-reset")
	powerOff(t, vm)

	vm = boot(t, im)
	expect(t, vm, "GUEST: ready")
	checkFactoryFull(t, vm, factory, "etc/ovroot")
	if out := guest(t, vm, "exec /usr/bin/ovrootctl restore /overlay/backup.tar"); !strings.Contains(out, "next boot") {
		t.Errorf("ovrootctl restore said %q", out)
	}
	powerOff(t, vm)

	// The restore's steps slowed down; the power cut somewhere in them,
	// then a boot that finishes it. Again from a new restore request.
	cuts := int(testenv.Int(t, "OVROOT_RESTORE_CUTS", 2, 1))
	for i := 1; i <= cuts; i++ {
		if i > 1 {
			if out := guest(t, vm, "exec /usr/bin/ovrootctl restore /overlay/backup.tar"); !strings.Contains(out, "next boot") {
				t.Errorf("ovrootctl restore said %q", out)
			}
			powerOff(t, vm)
		}
		vm = boot(t, im, withCmdline("ovroot.reset_step_delay="+stepDelay.String()))
		expect(t, vm, "restore (trigger=")
		at := time.Duration(rng.Int63n(int64(11 * stepDelay)))
		time.Sleep(at)
		vm.Kill()
		vm.Wait(time.Minute)
		last := "before the first step"
		if m := regexp.MustCompile(`restore step (\S+)`).FindAllStringSubmatch(vm.Console(), -1); len(m) > 0 {
			last = "in or after step " + m[len(m)-1][1]
		}
		t.Logf("power cut %d at %s into the restore: %s (replay: OVROOT_RESTORE_SEED=%d)", i, at, last, seed)

		vm = boot(t, im)
		expect(t, vm, "GUEST: ready")
		if got := rootManifest(vm); got != before {
			t.Errorf("after the restore (power cut %d at %s, %s), the root is %q, want the backed-up %q; seed %d", i, at, last, got, before, seed)
		}
		if got := guest(t, vm, "getxattr /etc/custom/site.conf user.site"); got != "yes\n" {
			t.Errorf("restored xattr = %q", got)
		}
		if got := guest(t, vm, "exists /etc/app.conf"); got != "/etc/app.conf exists=false\n" {
			t.Errorf("the restored whiteout: %q", got)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	powerOff(t, vm)
}
