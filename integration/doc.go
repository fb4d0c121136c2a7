// Package integration holds ovroot's end-to-end tests: they build real disk
// images with the host tool, boot them with Debian's kernels in QEMU (TCG)
// for x86_64, arm64 and 32-bit arm (which arches each test boots: allArches
// and testArches in harness_test.go), and assert on what the guest prints.
// The guest's /sbin/init is the agent in ./guest.
//
// Plain `go test ./...` skips these when QEMU or the kernels are missing;
// `make test` installs both and sets OVROOT_REQUIRE_TOOLS=1, which turns a
// skip into a failure.
package integration
