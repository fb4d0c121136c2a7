package slot

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"aead.dev/minisign"
	"golang.org/x/crypto/blake2b"
)

// Bundles are signed in minisign's format (ed25519; aead.dev/minisign, a
// pure-Go implementation): the signature member is exactly the file
// `minisign -S -m ovroot-bundle.json` would write, so anyone can check a
// bundle with Debian's minisign:
//
//	tar -xf new.bundle ovroot-bundle.json ovroot-bundle.json.minisig
//	minisign -V -p release.pub -m ovroot-bundle.json
//
// The signature covers the manifest's exact bytes, which name every
// member's size and SHA-256, so one signature check at the start covers
// the whole bundle.

// SigName is the signature member, right after the manifest.
const SigName = ManifestName + ".minisig"

// maxSig bounds the signature member (a minisign signature is ~300 bytes
// plus its comments).
const maxSig = 4 << 10

// A Key is a public key a device trusts, with the name it is known by (its
// file name) for messages.
type Key struct {
	Name string
	Key  minisign.PublicKey
}

// ID is the key's minisign key id, as minisign prints it.
func (k Key) ID() string { return KeyID(k.Key.ID()) }

// KeyID formats a minisign key id as minisign prints it.
func KeyID(id uint64) string { return strings.ToUpper(strconv.FormatUint(id, 16)) }

// Trust is what a device accepts: bundles signed by one of Keys, and
// unsigned ones only when AllowUnsigned (a development image).
type Trust struct {
	Keys          []Key
	AllowUnsigned bool
}

// ParsePublicKey reads a minisign public key file's text; name is for
// errors.
func ParsePublicKey(name string, data []byte) (Key, error) {
	var k minisign.PublicKey
	if err := k.UnmarshalText([]byte(strings.TrimSpace(string(data)))); err != nil {
		return Key{}, fmt.Errorf("%s: not a minisign public key (%v)", name, err)
	}
	return Key{Name: name, Key: k}, nil
}

// ReadPublicKey reads a minisign public key file.
func ReadPublicKey(path string) (Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("public key: %w", err)
	}
	if looksPrivate(data) {
		return Key{}, fmt.Errorf("%s is a secret key: give its .pub", path)
	}
	return ParsePublicKey(path, data)
}

func looksPrivate(data []byte) bool {
	return strings.Contains(string(data), "secret key")
}

// ReadPrivateKey reads an unencrypted minisign secret key file (as
// `ovroot keygen` or `minisign -G -W` writes it).
func ReadPrivateKey(path string) (minisign.PrivateKey, error) {
	var k minisign.PrivateKey
	data, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("signing key: %w", err)
	}
	if minisign.IsEncrypted(data) {
		return k, fmt.Errorf("signing key %s is protected by a password: ovroot reads only unencrypted keys (`ovroot keygen`, or `minisign -G -W`); keep the file itself secret", path)
	}
	if err := k.UnmarshalText(data); err != nil {
		return k, fmt.Errorf("signing key %s: not a minisign secret key (%v)", path, err)
	}
	return k, nil
}

// LoadTrust reads every *.pub file in dir (a root's trusted-keys
// directory). A missing directory trusts no key.
func LoadTrust(dir string) ([]Key, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	var keys []Key
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".pub") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		k, err := ParsePublicKey(filepath.Join(dir, e.Name()), data)
		if err != nil {
			return nil, fmt.Errorf("trusted keys: %w", err)
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys, nil
}

// GenerateKey makes a key pair: the secret key's file text (unencrypted,
// as `minisign -G -W` writes it, so minisign itself can sign with it) and
// the public key's.
func GenerateKey(random io.Reader) (pub, priv []byte, err error) {
	if random == nil {
		random = rand.Reader
	}
	p, s, err := minisign.GenerateKey(random)
	if err != nil {
		return nil, nil, err
	}
	pub, _ = p.MarshalText()
	pub = append(pub, '\n')
	priv, err = s.MarshalText()
	if err != nil {
		return nil, nil, err
	}
	priv, err = withChecksum(priv)
	if err != nil {
		return nil, nil, err
	}
	return pub, append(priv, '\n'), nil
}

// withChecksum fills in the checksum minisign's C tool checks in an
// unencrypted secret key (blake2b-256 of algorithm, key id and key), which
// aead.dev/minisign leaves zero.
func withChecksum(text []byte) ([]byte, error) {
	comment, enc, ok := strings.Cut(string(text), "\n")
	if !ok {
		return nil, errors.New("secret key text has no comment line")
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil || len(b) != 158 {
		return nil, fmt.Errorf("secret key text: unexpected encoding")
	}
	h, _ := blake2b.New256(nil)
	h.Write(b[0:2])    // signature algorithm
	h.Write(b[54:62])  // key id
	h.Write(b[62:126]) // ed25519 secret key
	copy(b[126:158], h.Sum(nil))
	return []byte(comment + "\n" + base64.StdEncoding.EncodeToString(b)), nil
}

// signManifest signs the manifest's bytes (prehashed, minisign's default).
func signManifest(key minisign.PrivateKey, manifest []byte, m Manifest) []byte {
	r := minisign.NewReader(strings.NewReader(string(manifest)))
	io.Copy(io.Discard, r)
	trusted := fmt.Sprintf("ovroot bundle: build %s, version %s", m.BuildID, m.Version)
	return r.SignWithComments(key, trusted, "signature from ovroot key "+KeyID(key.ID()))
}

// checkSignature decides whether a manifest may be read at all: signed by
// a key t trusts, or unsigned and t allows it. sig is nil for a bundle
// without a signature member. It returns the key that signed ("" when
// unsigned).
func checkSignature(t Trust, manifest, sig []byte) (string, error) {
	if sig == nil {
		if t.AllowUnsigned {
			return "", nil
		}
		return "", fmt.Errorf("the bundle is not signed, and this device installs only bundles signed by a key it trusts (%s)", t.names())
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return "", fmt.Errorf("the bundle's signature (%s) is unreadable: %v", SigName, err)
	}
	var key *Key
	for i := range t.Keys {
		if t.Keys[i].Key.ID() == s.KeyID {
			key = &t.Keys[i]
			break
		}
	}
	if key == nil {
		return "", fmt.Errorf("the bundle is signed by key %s, which this device does not trust (it trusts %s)", KeyID(s.KeyID), t.names())
	}
	r := minisign.NewReader(strings.NewReader(string(manifest)))
	io.Copy(io.Discard, r)
	if !r.Verify(key.Key, sig) {
		return "", fmt.Errorf("the bundle's signature by key %s (%s) does not verify: its manifest or signature was changed after signing", key.ID(), key.Name)
	}
	return key.ID(), nil
}

func (t Trust) names() string {
	if len(t.Keys) == 0 {
		return "no key: its image was built without [update] trusted_keys"
	}
	var l []string
	for _, k := range t.Keys {
		l = append(l, k.ID()+" "+filepath.Base(k.Name))
	}
	return strings.Join(l, ", ")
}
