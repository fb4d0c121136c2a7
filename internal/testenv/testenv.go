// Package testenv holds what the tests of several packages share about
// their environment: where `make kernels` put Debian's kernels, a response
// writer that cuts a download (CutWriter), and the
// rule that a test missing a tool skips under plain `go test` but fails
// under `make test` (OVROOT_REQUIRE_TOOLS=1), so CI never passes by
// skipping. It is for tests only.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Missing skips the test, or fails it under OVROOT_REQUIRE_TOOLS=1, saying
// what is missing and how to get it.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("OVROOT_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// RequireRoot is Missing for a test that needs root (mknod of a device,
// trusted.* xattrs, mount): it names what needs it, so a test never
// shrinks silently when run unprivileged.
func RequireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: "+what)
	}
}

// Int is the integer in the environment variable name, or def when it is
// unset or empty. A value that is not an integer, or is below min, fails
// the test: a typo in OVROOT_RESET_CUTS must not become zero cuts.
func Int(t testing.TB, name string, def, min int64) int64 {
	t.Helper()
	n, err := ParseInt(name, os.Getenv(name), def, min)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// ParseInt is Int's parsing, apart from the environment: s is the value
// of the variable name ("" = unset).
func ParseInt(name, s string, def, min int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a whole number", name, s)
	}
	if n < min {
		return 0, fmt.Errorf("%s=%q: want at least %d", name, s, min)
	}
	return n, nil
}

// KernelCache is OVROOT_KERNEL_CACHE, or .cache/kernels at the root of
// the module (found by walking up from the test's package directory).
func KernelCache() string {
	if d := os.Getenv("OVROOT_KERNEL_CACHE"); d != "" {
		return d
	}
	dir, _ := filepath.Abs(".")
	for d := dir; filepath.Dir(d) != d; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, ".cache", "kernels")
		}
	}
	return filepath.Join(dir, ".cache", "kernels")
}
