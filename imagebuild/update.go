package imagebuild

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"aead.dev/minisign"
	"github.com/ovroot/ovroot/config"
	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// updateFiles are a two-slot root's update policy and trusted keys
// (image.toml [update]), written into dir and returned as additions to
// the root, with the key that signs the bundle (nil: unsigned) and
// warnings for the log.
func updateFiles(im *config.Image, dir string, bundle bool) (adds []Addition, key *minisign.PrivateKey, warnings []string, err error) {
	if im.Slots != 2 {
		return nil, nil, nil, nil
	}
	u := im.Update
	pol := layout.UpdatePolicy{Version: u.ReleaseVersion(), AllowUnsigned: u.AllowUnsigned, AllowDowngrade: u.AllowDowngrade, CA: u.CA, AllowHTTP: u.AllowHTTP}
	data, err := json.MarshalIndent(pol, "", "  ")
	if err != nil {
		return nil, nil, nil, err
	}
	polFile := filepath.Join(dir, "update.json")
	if err := os.WriteFile(polFile, append(data, '\n'), 0o644); err != nil {
		return nil, nil, nil, err
	}
	adds = append(adds, Addition{Path: "/" + layout.UpdatePolicyFile, Source: polFile, Mode: 0o644, Own: true})
	seen := map[string]string{}
	for _, p := range u.TrustedKeys {
		if _, err := slot.ReadPublicKey(p); err != nil {
			return nil, nil, nil, fmt.Errorf("[update] trusted_keys: %w", err)
		}
		name := filepath.Base(p)
		if !strings.HasSuffix(name, ".pub") {
			name += ".pub"
		}
		if other, ok := seen[name]; ok {
			return nil, nil, nil, fmt.Errorf("[update] trusted_keys: %s and %s would both be %s in the root: rename one", other, p, name)
		}
		seen[name] = p
		adds = append(adds, Addition{Path: path.Join("/", layout.TrustedKeysDir, name), Source: p, Mode: 0o644, Own: true})
	}
	if u.SignKey != "" {
		k, err := slot.ReadPrivateKey(u.SignKey)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("[update] sign_key: %w", err)
		}
		key = &k
	}
	switch {
	case bundle && key == nil:
		warnings = append(warnings, "WARNING: the update bundle is NOT SIGNED (no --sign-key, no [update] sign_key): a device installs it only if its image has [update] allow_unsigned = true")
	case !bundle && key != nil:
		warnings = append(warnings, "[update] sign_key is set but no bundle is written (--update FILE): nothing was signed")
	}
	if len(u.TrustedKeys) == 0 && !u.AllowUnsigned {
		warnings = append(warnings, "WARNING: this image trusts no key ([update] trusted_keys is empty) and allow_unsigned is false: its ovrootctl will refuse every update bundle")
	}
	if u.AllowHTTP {
		warnings = append(warnings, "[update] allow_http = true: this image fetches updates over plain http:// too (signatures are still checked; the traffic is not private)")
	}
	if u.AllowUnsigned {
		warnings = append(warnings, "WARNING: [update] allow_unsigned = true: this image installs bundles from anyone (development only)")
	}
	if bundle && u.Version == "" {
		warnings = append(warnings, "the bundle has no [update] version: it is version 0, and devices cannot tell it from an older release")
	}
	return adds, key, warnings, nil
}
