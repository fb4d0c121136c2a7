//go:build !ovroot_nonet

package ctl

import (
	"context"
	"io"

	"github.com/ovroot/ovroot/internal/netfetch"
)

// NetUpdates says whether this ovrootctl fetches bundles over the
// network (built without the ovroot_nonet tag).
const NetUpdates = true

// openURL streams url through netfetch, which resumes a dropped download.
func openURL(ctx context.Context, url string, o netOptions) (io.ReadCloser, error) {
	no := netfetch.Options{CAFile: o.CAFile, Logf: o.Logf, Sleep: o.Sleep}
	if o.Progress != nil {
		no.Progress = func(p netfetch.Progress) { o.Progress(p.Done, p.Total, p.Resumes) }
	}
	return netfetch.Open(ctx, url, no)
}
