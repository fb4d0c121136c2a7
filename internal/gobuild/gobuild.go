// Package gobuild cross-compiles Go programs of this module (and the tools
// its go.mod lists, such as u-root's commands) for a device architecture:
// static (CGO_ENABLED=0), trimmed, stripped and without build IDs or VCS
// stamps, so the same source gives the same bytes.
package gobuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ovroot/ovroot/layout"
)

// ModulePath is this project's Go module.
const ModulePath = "github.com/ovroot/ovroot"

// Build compiles pkgs (import paths or ./relative paths) in sourceDir for
// arch. out is a file for one package, or a directory (ending in "/") for
// several, as with go build -o.
func Build(ctx context.Context, arch layout.Arch, sourceDir, out string, pkgs ...string) error {
	return BuildTags(ctx, arch, nil, sourceDir, out, pkgs...)
}

// BuildTags is Build with Go build tags, for test builds (the init's
// ovroot_faults hook); firmware is built without any.
func BuildTags(ctx context.Context, arch layout.Arch, tags []string, sourceDir, out string, pkgs ...string) error {
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-tags=" + strings.Join(tags, ","), "-o", out}
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = sourceDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch.GOARCH())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", strings.Join(pkgs, " "), arch, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// FindSource walks up from dir to the root of this module (the directory
// whose go.mod declares ModulePath).
func FindSource(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := abs; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && modulePath(data) == ModulePath {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("not inside the ovroot source tree (no go.mod declaring " + ModulePath + " above " + abs + ")")
		}
	}
}

func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}
