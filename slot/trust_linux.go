package slot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ovroot/ovroot/layout"
)

// Policy is what the running root says about updates, and what the data
// partition remembers.
type Policy struct {
	layout.UpdatePolicy
	Trust Trust
	// Highest is the highest release version this device ever confirmed
	// ("" before the first; MetaDir/HighestVersionFile).
	Highest string
	// HighestNote says why a damaged record was set aside.
	HighestNote string
}

// Policy reads the running root's update policy and trusted keys from
// its read-only lower (RomDir: a change in the upper cannot add a key) and
// the highest confirmed version from the data partition. A root built by
// an ovroot before signed bundles has neither: it trusts no key.
func (s *System) Policy() (Policy, error) {
	var p Policy
	rom := s.path(layout.RomDir)
	data, err := os.ReadFile(filepath.Join(rom, layout.UpdatePolicyFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return p, fmt.Errorf("the root's update policy: %w", err)
	default:
		if err := json.Unmarshal(data, &p.UpdatePolicy); err != nil {
			return p, fmt.Errorf("the root's update policy %s: %w", filepath.Join(layout.RomDir, layout.UpdatePolicyFile), err)
		}
	}
	if p.Trust.Keys, err = LoadTrust(filepath.Join(rom, layout.TrustedKeysDir)); err != nil {
		return p, err
	}
	p.Trust.AllowUnsigned = p.AllowUnsigned
	if p.Highest, p.HighestNote, err = readHighest(s.path(layout.OverlayDir)); err != nil {
		return p, err
	}
	return p, nil
}

func readHighest(overlay string) (v, note string, err error) {
	p := layout.Meta(overlay, layout.HighestVersionFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("the highest confirmed version: %w", err)
	}
	v = strings.TrimSpace(string(data))
	if _, err := layout.ParseVersion(v); err != nil {
		// Written whole by rename, so this is damage, not a power cut:
		// refusing every upgrade would strand the device, so say so
		// and go on with the running root's version alone.
		return "", fmt.Sprintf("%s is damaged (%v): set aside; the next confirmation rewrites it", p, err), nil
	}
	return v, "", nil
}

// recordConfirmed raises the data partition's highest confirmed version
// to the running root's, crash-safely (a power cut leaves the old record
// or the new one). Only a persistent boot has the data partition to
// write.
func (s *System) recordConfirmed(st layout.State) error {
	p, err := s.Policy()
	if err != nil {
		return err
	}
	if p.Version == "" {
		return nil
	}
	if p.Highest != "" {
		if c, err := layout.CompareVersions(p.Version, p.Highest); err != nil || c <= 0 {
			return err
		}
	}
	if st.Mode != layout.ModePersistent {
		return fmt.Errorf("the data partition is not in use (%s): version %s is not recorded as confirmed", st.Mode, p.Version)
	}
	dir := filepath.Dir(layout.Meta(s.path(layout.OverlayDir), layout.HighestVersionFile))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return s.replaceFile(dir, layout.HighestVersionFile, func(w io.Writer) error {
		_, err := io.WriteString(w, p.Version+"\n")
		return err
	}, nil)
}

// checkVersion refuses a bundle older than the running root or than the
// highest version the device confirmed, unless downgrade was asked for
// and the running image allows it.
func checkVersion(bundle string, p Policy, downgrade bool) (warning string, err error) {
	var older []string
	if p.Version != "" {
		c, err := layout.CompareVersions(bundle, p.Version)
		if err != nil {
			return "", fmt.Errorf("the running root's version: %w", err)
		}
		if c < 0 {
			older = append(older, fmt.Sprintf("the running root's version %s", p.Version))
		}
	}
	if p.Highest != "" {
		if c, err := layout.CompareVersions(bundle, p.Highest); err == nil && c < 0 {
			older = append(older, fmt.Sprintf("version %s, the highest this device ever confirmed", p.Highest))
		}
	}
	if len(older) == 0 {
		return "", nil
	}
	what := fmt.Sprintf("the bundle's version %s is older than %s", bundle, strings.Join(older, " and than "))
	switch {
	case !downgrade:
		return "", fmt.Errorf("%s: refusing a downgrade", what)
	case !p.AllowDowngrade:
		return "", fmt.Errorf("%s, and this image does not allow downgrades ([update] allow_downgrade is false): --allow-downgrade is refused", what)
	}
	return what + ": downgrading as asked (--allow-downgrade)", nil
}

// VerifyResult is what Verify found.
type VerifyResult struct {
	Manifest Manifest
	Signer   string // "" when unsigned (and the image allows it)
	// Refusal is why Upgrade would still refuse a bundle that verified:
	// another device, or an older version.
	Refusal string
}

// Verify checks a bundle as Upgrade would, its signature against the
// running root's trusted keys and every member against its checksum, and
// changes nothing (the boot partition is mounted read-only, for the facts
// a bundle must match).
func (s *System) Verify(path string) (VerifyResult, error) {
	var res VerifyResult
	pol, err := s.Policy()
	if err != nil {
		return res, err
	}
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("open the bundle: %w", err)
	}
	defer f.Close()
	br, err := Verify(f, pol.Trust)
	if br != nil {
		res.Manifest, res.Signer = br.Manifest, br.Signer
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	var why []string
	if _, err := checkVersion(res.Manifest.Version, pol, false); err != nil {
		why = append(why, err.Error())
	}
	d, err := s.findDevice()
	if err != nil {
		return res, err
	}
	e, err := s.mountESP(d, false)
	if err != nil {
		return res, err
	}
	info, err := readImageInfo(e.dir)
	if cerr := s.closeESP(e); err == nil {
		err = cerr
	}
	if err != nil {
		return res, err
	}
	if err := checkFits(res.Manifest, info); err != nil {
		why = append(why, err.Error())
	}
	res.Refusal = strings.Join(why, "; ")
	return res, nil
}
