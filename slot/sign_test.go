package slot

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
)

// testKeyPair is a key pair made from seed (GenerateKey reads 32 bytes).
func testKeyPair(t testing.TB, seed byte) (Key, minisign.PrivateKey) {
	t.Helper()
	pub, priv, err := GenerateKey(bytes.NewReader(bytes.Repeat([]byte{seed}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePublicKey("test"+string('0'+seed)+".pub", pub)
	if err != nil {
		t.Fatal(err)
	}
	var s minisign.PrivateKey
	if err := s.UnmarshalText(priv); err != nil {
		t.Fatal(err)
	}
	return k, s
}

func TestCheckSignature(t *testing.T) {
	a, aPriv := testKeyPair(t, 1)
	b, bPriv := testKeyPair(t, 2)
	manifest := []byte(`{"format":2,"version":"3"}` + "\n")
	m := Manifest{BuildID: "x", Version: "3"}
	sigA := signManifest(aPriv, manifest, m)
	sigB := signManifest(bPriv, manifest, m)
	flip := func(b []byte, i int) []byte {
		c := append([]byte(nil), b...)
		c[i] ^= 1
		return c
	}
	// The signature's base64 line: a flipped bit in the ed25519 bytes.
	sigLine := bytes.Index(sigA, []byte("\n")) + 20
	trust := Trust{Keys: []Key{a}}
	cases := []struct {
		name     string
		t        Trust
		manifest []byte
		sig      []byte
		want     string // "" = accepted
	}{
		{"signed by a trusted key", trust, manifest, sigA, ""},
		{"second of two trusted keys", Trust{Keys: []Key{a, b}}, manifest, sigB, ""},
		{"unsigned", trust, manifest, nil, "is not signed"},
		{"unsigned, allowed", Trust{AllowUnsigned: true}, manifest, nil, ""},
		{"untrusted key", trust, manifest, sigB, "signed by key " + b.ID() + ", which this device does not trust (it trusts " + a.ID()},
		{"no key trusted", Trust{}, manifest, sigA, "it trusts no key"},
		{"manifest bit flipped", trust, flip(manifest, 12), sigA, "does not verify"},
		{"signature bit flipped", trust, manifest, flip(sigA, sigLine), "does not verify"},
		{"trusted comment changed", trust, manifest, bytes.Replace(sigA, []byte("version 3"), []byte("version 4"), 1), "does not verify"},
		{"signature junk", trust, manifest, []byte("hello\n"), "unreadable"},
		{"unsigned allowed, bad signature still refused", Trust{Keys: []Key{a}, AllowUnsigned: true}, flip(manifest, 3), sigA, "does not verify"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signer, err := checkSignature(tc.t, tc.manifest, tc.sig)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("checkSignature: %v, want accepted", err)
				}
				if tc.sig != nil && signer == "" {
					t.Errorf("accepted without naming the signer")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkSignature = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "k.pub"), pub, 0o644)
	os.WriteFile(filepath.Join(dir, "k.key"), priv, 0o600)
	k, err := ReadPublicKey(filepath.Join(dir, "k.pub"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ReadPrivateKey(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	if s.ID() != k.Key.ID() {
		t.Errorf("key ids differ: %x, %x", s.ID(), k.Key.ID())
	}
	if _, err := ReadPublicKey(filepath.Join(dir, "k.key")); err == nil || !strings.Contains(err.Error(), "secret key: give its .pub") {
		t.Errorf("a secret key as public key: %v", err)
	}
	if _, err := ReadPrivateKey(filepath.Join(dir, "k.pub")); err == nil || !strings.Contains(err.Error(), "not a minisign secret key") {
		t.Errorf("a public key as secret key: %v", err)
	}
	enc, _ := minisign.EncryptKey("pw", s)
	os.WriteFile(filepath.Join(dir, "enc.key"), enc, 0o600)
	if _, err := ReadPrivateKey(filepath.Join(dir, "enc.key")); err == nil || !strings.Contains(err.Error(), "protected by a password") {
		t.Errorf("an encrypted key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "README"), []byte("not a key"), 0o644)
	keys, err := LoadTrust(dir)
	if err != nil || len(keys) != 1 || keys[0].Key.ID() != k.Key.ID() {
		t.Errorf("LoadTrust = %v, %v; want the one .pub", keys, err)
	}
	os.WriteFile(filepath.Join(dir, "bad.pub"), []byte("junk"), 0o644)
	if _, err := LoadTrust(dir); err == nil || !strings.Contains(err.Error(), "bad.pub") {
		t.Errorf("LoadTrust with a bad key: %v", err)
	}
	if keys, err := LoadTrust(filepath.Join(dir, "none")); err != nil || keys != nil {
		t.Errorf("LoadTrust of a missing dir = %v, %v", keys, err)
	}
}

// TestMinisignCompatible: Debian's minisign verifies what ovroot signs and
// signs with the key ovroot keygen writes, and ovroot verifies that.
func TestMinisignCompatible(t *testing.T) {
	tool, err := exec.LookPath("minisign")
	if err != nil {
		if os.Getenv("OVROOT_REQUIRE_TOOLS") != "" {
			t.Fatal("minisign is not installed (make deps installs it)")
		}
		t.Skip("minisign is not installed")
	}
	dir := t.TempDir()
	pub, priv, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pubPath, keyPath := filepath.Join(dir, "k.pub"), filepath.Join(dir, "k.key")
	os.WriteFile(pubPath, pub, 0o644)
	os.WriteFile(keyPath, priv, 0o600)
	k, _ := ReadPublicKey(pubPath)
	s, _ := ReadPrivateKey(keyPath)
	manifest := []byte(`{"format":2}` + "\n")
	mPath := filepath.Join(dir, ManifestName)
	os.WriteFile(mPath, manifest, 0o644)
	os.WriteFile(mPath+".minisig", signManifest(s, manifest, Manifest{Version: "1"}), 0o644)
	if out, err := exec.Command(tool, "-V", "-p", pubPath, "-m", mPath).CombinedOutput(); err != nil {
		t.Fatalf("minisign -V on ovroot's signature: %v\n%s", err, out)
	}
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("signed by minisign\n"), 0o644)
	if out, err := exec.Command(tool, "-S", "-s", keyPath, "-m", other).CombinedOutput(); err != nil {
		t.Fatalf("minisign -S with ovroot's key: %v\n%s", err, out)
	}
	sig, _ := os.ReadFile(other + ".minisig")
	if _, err := checkSignature(Trust{Keys: []Key{k}}, []byte("signed by minisign\n"), sig); err != nil {
		t.Errorf("ovroot on minisign's signature: %v", err)
	}
}
