// Package gobuild cross-compiles the programs that run on the device (the
// init, ovrootctl, u-root's commands) for a device architecture: static
// (CGO_ENABLED=0), trimmed, stripped and without build IDs or VCS stamps,
// so the same source and Go toolchain give the same bytes.
//
// The source is the copy embedded in the ovroot binary (package ovroot at
// the module root), not the tree the user happens to stand in: an installed
// ovroot builds exactly its own version anywhere. Cache extracts it once
// and keeps the compiled programs per source, Go version and arch, so a
// build with nothing changed compiles nothing. It does not decide which
// programs an image carries (imagebuild does).
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
// arch with the go command on PATH. out is a file for one package, or a
// directory (ending in "/") for several, as with go build -o.
func Build(ctx context.Context, arch layout.Arch, sourceDir, out string, pkgs ...string) error {
	return BuildTags(ctx, arch, nil, sourceDir, out, pkgs...)
}

// BuildTags is Build with Go build tags, for test builds (the init's
// ovroot_faults hook); firmware is built without any.
func BuildTags(ctx context.Context, arch layout.Arch, tags []string, sourceDir, out string, pkgs ...string) error {
	return build(ctx, "go", arch, tags, sourceDir, out, pkgs...)
}

func build(ctx context.Context, goCmd string, arch layout.Arch, tags []string, sourceDir, out string, pkgs ...string) error {
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-tags=" + strings.Join(tags, ","), "-o", out}
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = sourceDir
	cmd.Env = goEnv(arch)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return errNoGo(goCmd, err)
		}
		return fmt.Errorf("go build %s for %s in %s: %w\n%s", strings.Join(pkgs, " "), arch, sourceDir, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// goEnv is the environment of every go command: static, for the device,
// with go.mod and go.sum as they are (a go.work above the cache, or a
// user's GOFLAGS=-mod=vendor, must not change what is built), for the
// arch's baseline CPU (GOARM=7 for arm: a user's GOARM=5 or GOAMD64=v3
// must not either). Later entries win, so these override the user's.
func goEnv(arch layout.Arch) []string {
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOWORK=off", "GOFLAGS=-mod=readonly")
	if arch != "" {
		env = append(env, "GOARCH="+arch.GOARCH(), arch.GoVariant())
	}
	return env
}

// targetKey names what a build for arch targets, for the cache: the arch
// and its instruction-set setting ("arm-GOARM7"), so programs built for
// one GOARM are never taken for another's.
func targetKey(arch layout.Arch) string {
	return string(arch) + "-" + strings.ReplaceAll(arch.GoVariant(), "=", "")
}

func errNoGo(goCmd string, err error) error {
	return fmt.Errorf("the device programs (init, ovrootctl, emergency shell) are compiled from the source built into ovroot, "+
		"and that needs the Go toolchain: %q not found on PATH (install Go from go.dev/dl or your distribution's golang package): %w", goCmd, err)
}

// FindSource walks up from dir to the root of this module (the directory
// whose go.mod declares ModulePath). Only tests in the checkout use it (to
// build test programs that are not embedded).
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
