package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

func ovroot(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = Context{Stdout: &out, Stderr: &errOut, Args: args}.Execute(context.Background())
	return out.String(), errOut.String(), err
}

// ovroot keygen writes a 0600 secret key and a public key, never prints
// the secret, and never replaces a key; ovroot verify accepts a bundle
// signed by the key it is given and refuses every other.
func TestKeygenVerify(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	out, errOut, err := ovroot("keygen", "-o", "keys/release")
	if err == nil || !strings.Contains(err.Error(), "keys/release.key") {
		// keys/ does not exist: refused, naming the file.
		t.Errorf("keygen into a missing directory: %v", err)
	}
	os.Mkdir("keys", 0o755)
	out, errOut, err = ovroot("keygen", "-o", "keys/release")
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, errOut)
	}
	secret, _ := os.ReadFile("keys/release.key")
	if fi, err := os.Stat("keys/release.key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat("keys/release.pub"); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("public key mode: %v, %v", fi.Mode(), err)
	}
	secretLine := strings.Split(strings.TrimSpace(string(secret)), "\n")[1]
	if strings.Contains(out+errOut, secretLine) {
		t.Errorf("keygen printed the secret key:\n%s%s", out, errOut)
	}
	if _, _, err := ovroot("keygen", "-o", "keys/release"); err == nil || !strings.Contains(err.Error(), "exists: not replacing a key") {
		t.Errorf("keygen over an existing key: %v", err)
	}
	if again, _ := os.ReadFile("keys/release.key"); !bytes.Equal(again, secret) {
		t.Error("a refused keygen changed the secret key")
	}
	if _, _, err := ovroot("keygen"); !errors.Is(err, ErrUsage) {
		t.Errorf("keygen without -o: %v", err)
	}
	ovroot("keygen", "-o", "keys/other")

	secretKey, err := slot.ReadPrivateKey("keys/release.key")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, signed bool, edit func([]byte) []byte) string {
		var b bytes.Buffer
		src := func(n string, d []byte) slot.Source {
			return slot.Source{Name: n, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(d)), nil }}
		}
		m := slot.Manifest{Arch: layout.ARM64, Loader: layout.LoaderUEFI, Tries: 3, Version: "7", Created: time.Unix(0, 0)}
		k := &secretKey
		if !signed {
			k = nil
		}
		if err := slot.WriteBundle(&b, m, []slot.Source{src(slot.RootName, bytes.Repeat([]byte("r"), 5000)), src(layout.KernelFile, []byte("k")), src(layout.InitrdFile, []byte("i"))}, k); err != nil {
			t.Fatal(err)
		}
		data := b.Bytes()
		if edit != nil {
			data = edit(data)
		}
		os.WriteFile(name, data, 0o644)
		return name
	}
	good := write("good.bundle", true, nil)
	out, _, err = ovroot("verify", good, "--key", "keys/release.pub")
	if err != nil || !strings.Contains(out, "good: version 7") || !strings.Contains(out, "signed by") {
		t.Errorf("verify a good bundle: %q, %v", out, err)
	}
	for _, c := range []struct {
		name   string
		bundle string
		args   []string
		want   string
	}{
		{"other key", good, []string{"--key", "keys/other.pub"}, "which this device does not trust"},
		{"unsigned", write("unsigned.bundle", false, nil), []string{"--key", "keys/release.pub"}, "is not signed"},
		{"root bit flipped", write("flipped.bundle", true, func(d []byte) []byte {
			i := bytes.Index(d, bytes.Repeat([]byte("r"), 100))
			d[i+50] ^= 1
			return d
		}), []string{"--key", "keys/release.pub"}, "checksum mismatch"},
		{"secret key given", good, []string{"--key", "keys/release.key"}, "is a secret key: give its .pub"},
		{"no key", good, nil, "give --key PUB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ovroot(append([]string{"verify", c.bundle}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("verify = %v, want an error with %q", err, c.want)
			}
		})
	}
	if out, _, err := ovroot("verify", filepath.Join(dir, "unsigned.bundle"), "--allow-unsigned"); err != nil || !strings.Contains(out, "NOT SIGNED") {
		t.Errorf("verify --allow-unsigned: %q, %v", out, err)
	}
}
