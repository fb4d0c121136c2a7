package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/ovroot/ovroot/slot"
)

// runKeygen writes a minisign key pair: NAME.key (the secret key, 0600,
// never printed) and NAME.pub.
func runKeygen(c Context, ctx context.Context, args []string) error {
	fl := c.flagSet("keygen", "-o NAME",
		"ovroot keygen -o keys/release   (writes keys/release.key, secret, and keys/release.pub)")
	out := fl.String("o", "", "write the secret key to `NAME`.key (mode 0600) and the public key to NAME.pub (required)")
	pos, err := parse(fl, args)
	if err != nil {
		return err
	}
	if err := noArgs("keygen", pos); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: -o NAME is required (e.g. -o keys/release)", ErrUsage)
	}
	name := strings.TrimSuffix(strings.TrimSuffix(*out, ".key"), ".pub")
	pub, priv, err := slot.GenerateKey(nil)
	if err != nil {
		return err
	}
	// O_EXCL: an existing key is never replaced (a lost secret key is a
	// fleet that can no longer be updated).
	for _, p := range []string{name + ".key", name + ".pub"} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("keygen: %s exists: not replacing a key (remove it first, or choose another -o)", p)
		}
	}
	if err := writeNew(name+".key", priv, 0o600); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeNew(name+".pub", pub, 0o644); err != nil {
		os.Remove(name + ".key")
		return fmt.Errorf("keygen: %w", err)
	}
	k, err := slot.ParsePublicKey(name+".pub", pub)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "key %s: secret key %s.key (keep it secret: it signs your updates), public key %s.pub\n", k.ID(), name, name)
	fmt.Fprintf(c.Stdout, "sign bundles with [update] sign_key = %q; devices trust it with [update] trusted_keys = [%q]\n", name+".key", name+".pub")
	return nil
}

func writeNew(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil { // the umask may have taken bits off a public key
		f.Close()
		os.Remove(path)
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// runVerify checks a bundle's signature against the given public keys and
// every member's checksum, as a device does before it installs one.
func runVerify(c Context, ctx context.Context, args []string) error {
	fl := c.flagSet("verify", "BUNDLE --key PUB [--key PUB ...]",
		"ovroot verify out/update.bundle --key keys/release.pub")
	var keys stringList
	fl.Var(&keys, "key", "public key `FILE` to trust (repeatable); without any, the bundle must be unsigned")
	unsigned := fl.Bool("allow-unsigned", false, "accept an unsigned bundle (as an image with [update] allow_unsigned does)")
	pos, err := parse(fl, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: give one bundle, e.g. ovroot verify update.bundle --key release.pub", ErrUsage)
	}
	var t slot.Trust
	for _, p := range keys {
		k, err := slot.ReadPublicKey(p)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		t.Keys = append(t.Keys, k)
	}
	t.AllowUnsigned = *unsigned
	if len(t.Keys) == 0 && !t.AllowUnsigned {
		return fmt.Errorf("%w: give --key PUB (the public key a device trusts), or --allow-unsigned", ErrUsage)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	br, err := slot.Verify(f, t)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	if br == nil {
		return errors.New("no bundle")
	}
	m := br.Manifest
	signer := "NOT SIGNED"
	if br.Signer != "" {
		signer = "signed by " + br.Signer
	}
	fmt.Fprintf(c.Stdout, "%s: good: version %s, build %s, %s, board %s, loader %s, %s; every member matches its checksum\n",
		pos[0], m.Version, m.BuildID, m.Arch, boardName(m.Board), m.Loader, signer)
	return nil
}

func boardName(b string) string {
	if b == "" {
		return slot.DefaultBoard
	}
	return b
}
