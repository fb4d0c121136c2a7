//go:build !ovroot_nonet

package ctl

import (
	"context"
	"io"
	"path/filepath"
	"strings"

	"github.com/ovroot/ovroot/internal/netfetch"
	"github.com/ovroot/ovroot/internal/ocifetch"
)

// NetUpdates says whether this ovrootctl fetches bundles over the
// network (built without the ovroot_nonet tag).
const NetUpdates = true

// openURL streams url through netfetch, which resumes a dropped download;
// an oci:// reference is resolved by ocifetch first, and its blob's
// digest checked as it streams.
func openURL(ctx context.Context, url string, o netOptions) (io.ReadCloser, error) {
	no := netfetch.Options{CAFile: o.CAFile, Logf: o.Logf, Sleep: o.Sleep, IdleTimeout: o.Stall, MaxResumes: o.Retries}
	if o.Progress != nil {
		no.Progress = func(p netfetch.Progress) { o.Progress(p.Done, p.Total, p.Resumes) }
	}
	if strings.HasPrefix(url, "oci://") {
		ref, err := ocifetch.ParseRef(url)
		if err != nil {
			return nil, err
		}
		creds, err := ocifetch.ReadCredentials(filepath.Join(o.Root, ocifetch.CredentialsFile))
		if err != nil {
			return nil, err
		}
		return ocifetch.Open(ctx, ref, ocifetch.Options{AllowHTTP: o.AllowHTTP, Credentials: creds, Fetch: no})
	}
	return netfetch.Open(ctx, url, no)
}
