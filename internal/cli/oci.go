package cli

import (
	"context"
	"fmt"

	"github.com/ovroot/ovroot/internal/ocibundle"
)

// runPush publishes a bundle to an OCI registry (internal/ocibundle).
func runPush(c Context, ctx context.Context, args []string) error {
	fs := c.flagSet("push", "BUNDLE REGISTRY/REPO:TAG [--plain-http]",
		"ovroot push out/update.bundle ghcr.io/acme/firmware:1.4.0   (devices: ovrootctl upgrade oci://ghcr.io/acme/firmware:1.4.0)")
	plain := fs.Bool("plain-http", false, "talk to the registry over plain http:// (a lab registry)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: give a bundle and where to push it, e.g. ovroot push update.bundle ghcr.io/acme/firmware:1.4.0", ErrUsage)
	}
	p, err := ocibundle.Push(ctx, pos[0], pos[1], ocibundle.Options{PlainHTTP: *plain})
	if err != nil {
		return err
	}
	c.logf("pushed %s (version %s, %s, board %s, %d bytes) as %s", pos[0], p.Annotations["org.opencontainers.image.version"],
		p.Annotations[ocibundle.AnnotationArch], p.Annotations[ocibundle.AnnotationBoard], p.Size, p.Ref)
	fmt.Fprintln(c.Stdout, p.Digest)
	return nil
}

// runPull fetches a bundle back from an OCI registry.
func runPull(c Context, ctx context.Context, args []string) error {
	fs := c.flagSet("pull", "REGISTRY/REPO:TAG|REGISTRY/REPO@sha256:... -o FILE [--plain-http]",
		"ovroot pull ghcr.io/acme/firmware:1.4.0 -o update.bundle && ovroot verify update.bundle --key keys/release.pub")
	out := fs.String("o", "", "write the bundle to `FILE` (required)")
	plain := fs.Bool("plain-http", false, "talk to the registry over plain http:// (a lab registry)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: give one reference, e.g. ovroot pull ghcr.io/acme/firmware:1.4.0 -o update.bundle", ErrUsage)
	}
	if *out == "" {
		return fmt.Errorf("%w: -o FILE is required", ErrUsage)
	}
	p, err := ocibundle.Pull(ctx, pos[0], *out, ocibundle.Options{PlainHTTP: *plain})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "%s: version %s, %s, board %s, %d bytes, blob %s (checked), manifest %s\n", *out,
		p.Annotations["org.opencontainers.image.version"], p.Annotations[ocibundle.AnnotationArch], p.Annotations[ocibundle.AnnotationBoard], p.Size, p.BlobDigest, p.Digest)
	return nil
}
