// Package bench holds the performance table behind `make bench`: each of
// ovroot's figures next to a baseline measured in the same run (a busybox
// shell preinit built here from Debian's busybox-static, plain mksquashfs,
// host mke2fs), the ratio and the goal. It lives in bench_test.go and runs
// only with OVROOT_BENCH=1, never under `make test`; goals are reported as
// met or not met, never as a test failure.
package bench
