package imagebuild

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// A two-slot root gets its update policy and trusted keys; a rootfs that
// brings its own is refused (no vendor tarball adds a key image.toml does
// not name); the build warns about an unsigned bundle and an image that
// trusts no key.
func TestUpdateFiles(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	keys := t.TempDir()
	for _, n := range []string{"release", "backup"} {
		pub, priv, err := slot.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(keys, n+".pub"), pub, 0o644)
		os.WriteFile(filepath.Join(keys, n+".key"), priv, 0o600)
	}
	os.MkdirAll(filepath.Join(keys, "other"), 0o755)
	backup, _ := os.ReadFile(filepath.Join(keys, "backup.pub"))
	os.WriteFile(filepath.Join(keys, "other/release.pub"), backup, 0o644)
	image := func(edit func(u *config.Update)) *config.Image {
		im := config.DefaultImage(layout.ARM64)
		im.Slots = 2
		im.Update = config.Update{Version: "3", SignKey: filepath.Join(keys, "release.key"),
			TrustedKeys: []string{filepath.Join(keys, "release.pub"), filepath.Join(keys, "backup.pub")}}
		if edit != nil {
			edit(&im.Update)
		}
		return im
	}

	dir := t.TempDir()
	adds, key, warnings, err := updateFiles(image(nil), dir, true)
	if err != nil || key == nil || len(warnings) != 0 {
		t.Fatalf("updateFiles = %d adds, key %v, warnings %q, %v", len(adds), key != nil, warnings, err)
	}
	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "etc/ovroot"), 0o755) // the directory itself may be there
	img := filepath.Join(t.TempDir(), "root.sqfs")
	if _, err := MakeSquashfs(context.Background(), rootfs, img, "gzip", adds...); err != nil {
		t.Fatal(err)
	}
	if got := catFile(t, img, "/"+layout.UpdatePolicyFile); !strings.Contains(got, `"version": "3"`) || strings.Contains(got, "allow") {
		t.Errorf("update.json = %q", got)
	}
	want, _ := os.ReadFile(filepath.Join(keys, "backup.pub"))
	if got := catFile(t, img, "/"+layout.TrustedKeysDir+"/backup.pub"); got != string(want) {
		t.Errorf("backup.pub in the root = %q", got)
	}

	for _, c := range []struct {
		name     string
		edit     func(u *config.Update)
		bundle   bool
		err      string
		warnings []string
	}{
		{"unsigned bundle", func(u *config.Update) { u.SignKey = "" }, true, "", []string{"the update bundle is NOT SIGNED"}},
		{"trusts no key", func(u *config.Update) { u.TrustedKeys = nil }, true, "", []string{"this image trusts no key"}},
		{"allow unsigned", func(u *config.Update) { u.AllowUnsigned = true }, true, "", []string{"allow_unsigned = true"}},
		{"no version", func(u *config.Update) { u.Version = "" }, true, "", []string{"it is version 0"}},
		{"allow http", func(u *config.Update) { u.AllowHTTP = true }, true, "", []string{"allow_http = true"}},
		{"key without bundle", nil, false, "", []string{"no bundle is written"}},
		{"secret key as trusted", func(u *config.Update) { u.TrustedKeys = []string{filepath.Join(keys, "release.key")} }, true, "is a secret key: give its .pub", nil},
		{"public key as sign key", func(u *config.Update) { u.SignKey = filepath.Join(keys, "release.pub") }, true, "[update] sign_key: signing key", nil},
		{"missing key", func(u *config.Update) { u.TrustedKeys = []string{filepath.Join(keys, "gone.pub")} }, true, "gone.pub", nil},
		{"two keys of one name", func(u *config.Update) {
			u.TrustedKeys = append(u.TrustedKeys, filepath.Join(keys, "other/release.pub"))
		}, true, "would both be release.pub in the root", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, warnings, err := updateFiles(image(c.edit), t.TempDir(), c.bundle)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("updateFiles = %v, want an error with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(warnings, "\n")
			for _, w := range c.warnings {
				if !strings.Contains(all, w) {
					t.Errorf("warnings %q lack %q", all, w)
				}
			}
		})
	}

	// A rootfs with its own trusted keys or policy is refused.
	for _, own := range []string{layout.TrustedKeysDir + "/vendor.pub", layout.UpdatePolicyFile} {
		rootfs := t.TempDir()
		os.MkdirAll(filepath.Join(rootfs, filepath.Dir(own)), 0o755)
		os.WriteFile(filepath.Join(rootfs, own), []byte("x"), 0o644)
		adds, _, _, err := updateFiles(image(nil), t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		_, err = MakeSquashfs(context.Background(), rootfs, filepath.Join(t.TempDir(), "root.sqfs"), "gzip", adds...)
		if err == nil || !strings.Contains(err.Error(), "the rootfs has /"+filepath.Dir(own)) && !strings.Contains(err.Error(), "the rootfs has /"+own) {
			t.Errorf("rootfs with its own %s: %v", own, err)
		}
	}
	// One-slot images get none of it.
	im := image(nil)
	im.Slots = 1
	if adds, _, _, err := updateFiles(im, t.TempDir(), false); err != nil || len(adds) != 0 {
		t.Errorf("one-slot image: %d adds, %v", len(adds), err)
	}
}

// The network keys reach the device in the root's update.json, where
// ovrootctl reads them (slot.Policy).
func TestUpdatePolicyNetworkKeys(t *testing.T) {
	im := config.DefaultImage(layout.ARM64)
	im.Slots = 2
	im.Update = config.Update{Version: "3", AllowUnsigned: true, CA: "/etc/ssl/updates-ca.pem", AllowHTTP: true}
	dir := t.TempDir()
	if _, _, _, err := updateFiles(im, dir, false); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "update.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got layout.UpdatePolicy
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := layout.UpdatePolicy{Version: "3", AllowUnsigned: true, CA: "/etc/ssl/updates-ca.pem", AllowHTTP: true}
	if got != want {
		t.Errorf("update.json = %+v, want %+v", got, want)
	}
}
