// Package testenv holds what the tests of several packages share about
// their environment: where `make kernels` put Debian's kernels, and the
// rule that a test missing a tool skips under plain `go test` but fails
// under `make test` (OVROOT_REQUIRE_TOOLS=1), so CI never passes by
// skipping. It is for tests only.
package testenv

import (
	"os"
	"path/filepath"
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
