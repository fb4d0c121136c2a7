//go:build ovroot_nonet

package ctl

import (
	"context"
	"fmt"
	"io"
)

// NetUpdates says whether this ovrootctl fetches bundles over the
// network: this one was built with the ovroot_nonet tag, for images that
// never do (net/http and TLS cost about 3 MB).
const NetUpdates = false

func openURL(ctx context.Context, url string, o netOptions) (io.ReadCloser, error) {
	return nil, fmt.Errorf("%s: this image's ovrootctl has no network code (images get it with [update] network = true in image.toml): fetch the bundle to a file and give its path", url)
}
