package imagebuild

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

// kernelPackage follows Debian's meta-package to today's versioned kernel.
func TestKernelPackage(t *testing.T) {
	cases := []struct {
		name, out, flavour, want string
	}{
		{"amd64", "linux-image-amd64\n  Depends: linux-image-6.1.0-41-amd64\n", "amd64", "linux-image-6.1.0-41-amd64"},
		{"foreign arch suffix", "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-41-arm64:arm64\n", "arm64", "linux-image-6.1.0-41-arm64"},
		{"armmp among others", "linux-image-armmp:armhf\n  Depends: initramfs-tools\n |Depends: linux-image-6.1.0-41-armmp:armhf\n", "armmp", "linux-image-6.1.0-41-armmp"},
		{"another flavour", "linux-image-amd64\n  Depends: linux-image-6.1.0-41-cloud-amd64\n", "arm64", ""},
		{"signed meta only", "linux-image-amd64\n  Depends: linux-image-amd64-signed-template\n", "amd64", ""},
		{"apt knows nothing", "", "amd64", ""},
	}
	for _, tc := range cases {
		got, ok := kernelPackage(tc.out, tc.flavour)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: kernelPackage = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

// fakeDebian puts apt-cache, apt-get and dpkg-deb on PATH that serve
// linux-image-<release> with kernel as its vmlinuz; dpkg-deb fails when
// the file broken exists in the cache dir's parent (a fetch cut short).
func fakeDebian(t *testing.T, release string, kernel []byte) (broken string) {
	t.Helper()
	bin := t.TempDir()
	src := filepath.Join(bin, "vmlinuz")
	if err := os.WriteFile(src, kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	broken = filepath.Join(bin, "broken")
	scripts := map[string]string{
		"apt-cache": "#!/bin/sh\necho \"linux-image-amd64\"\necho \"  Depends: linux-image-" + release + "\"\n",
		"apt-get":   "#!/bin/sh\n[ \"$1 $3\" = \"download linux-image-" + release + ":amd64\" ] || exit 9\necho deb > linux-image-" + release + "_1_amd64.deb\n",
		"dpkg-deb": "#!/bin/sh\n[ -e " + broken + " ] && { echo 'dpkg-deb: error: unexpected end of file' >&2; exit 2; }\n" +
			"mkdir -p \"$3/boot\" \"$3/lib/modules/" + release + "/kernel\"\ncp " + src + " \"$3/boot/vmlinuz-" + release + "\"\n" +
			"echo " + release + " > \"$3/lib/modules/" + release + "/modules.dep\"\n",
	}
	for name, text := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	return broken
}

// FetchKernel installs the kernel and its modules with the release file
// last; a newer one replaces it whole; a failed fetch leaves the old one
// as it was; a cache without the release file offers no kernel.
func TestFetchKernel(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("OVROOT_KERNEL_CACHE", cache)
	t.Setenv("OVROOT_CACHE", t.TempDir())
	t.Chdir(t.TempDir()) // no .cache/kernels of a checkout
	fakeDebian(t, "6.1.0-41-amd64", fakeBzImage("6.1.0-41-amd64"))
	ctx := context.Background()
	if _, ok := FindCachedKernel(layout.X86_64); ok {
		t.Fatal("an empty cache offers a kernel")
	}
	k, err := DefaultKernel(ctx, layout.X86_64, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "amd64")
	if k.Release != "6.1.0-41-amd64" || k.Kernel != filepath.Join(dir, "vmlinuz") || k.Modules != filepath.Join(dir, "modules") {
		t.Errorf("DefaultKernel = %+v", k)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "modules", "modules.dep")); string(b) != "6.1.0-41-amd64\n" {
		t.Errorf("modules tree not in place: modules.dep %q", b)
	}
	if got, ok := FindCachedKernel(layout.X86_64); !ok || got != k {
		t.Errorf("FindCachedKernel after the fetch = %+v, %v", got, ok)
	}

	// Debian moved on: the next fetch replaces kernel and modules together.
	fakeDebian(t, "6.1.0-42-amd64", fakeBzImage("6.1.0-42-amd64"))
	if k, err = FetchKernel(ctx, layout.X86_64, cache, t.Logf); err != nil || k.Release != "6.1.0-42-amd64" {
		t.Fatalf("refetch = %+v, %v", k, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "modules", "modules.dep")); err != nil {
		t.Error(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "modules", "modules.dep")); string(b) != "6.1.0-42-amd64\n" {
		t.Errorf("old modules kept beside the new kernel: modules.dep %q", b)
	}

	// A fetch that fails midway changes nothing that was there.
	broken := fakeDebian(t, "6.1.0-43-amd64", fakeBzImage("6.1.0-43-amd64"))
	os.WriteFile(broken, nil, 0o644)
	if _, err := FetchKernel(ctx, layout.X86_64, cache, t.Logf); err == nil || !strings.Contains(err.Error(), "unexpected end of file") {
		t.Errorf("broken fetch: %v", err)
	}
	if got, ok := FindCachedKernel(layout.X86_64); !ok || got.Release != "6.1.0-42-amd64" {
		t.Errorf("after a failed fetch the cache offers %+v, %v; want 6.1.0-42-amd64 untouched", got, ok)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".fetch-*")); len(left) > 0 {
		t.Errorf("a failed fetch left %v", left)
	}

	// A package whose kernel is for another arch is refused, not cached.
	fakeDebian(t, "6.1.0-44-amd64", fakeArm64Image("6.1.0-44-arm64"))
	if _, err := FetchKernel(ctx, layout.X86_64, cache, t.Logf); err == nil || !strings.Contains(err.Error(), "not a kernel for x86_64") {
		t.Errorf("wrong-arch package: %v", err)
	}

	// Half a fetch (no release file: cut before the last step) is no kernel.
	os.Remove(filepath.Join(dir, "release"))
	if got, ok := FindCachedKernel(layout.X86_64); ok {
		t.Errorf("a cache without its release file offers %+v", got)
	}
}

// Without apt-get and dpkg-deb (not a Debian machine) the fetch says what
// to give instead.
func TestFetchNeedsDebian(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := FetchKernel(context.Background(), layout.ARM64, t.TempDir(), t.Logf)
	if err == nil || !strings.Contains(err.Error(), "needs apt-cache") || !strings.Contains(err.Error(), "--kernel") {
		t.Errorf("FetchKernel without apt: %v", err)
	}
}
