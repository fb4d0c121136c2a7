package boot

import "golang.org/x/sys/unix"

// zeroRange zeroes n bytes at off with fallocate(FALLOC_FL_ZERO_RANGE): on
// a block device the kernel sends WRITE ZEROES (or writes zero pages
// itself), on a file it allocates zeroed extents; either is far cheaper
// than copying the zeros in. It reports false when the file cannot do it
// (then the zeros are written as usual). The range's page cache is dropped
// by the kernel, so later writes and reads through d.f see the zeros.
func (d *deferred) zeroRange(off, n int64) bool {
	if d.noZeroRange {
		return false
	}
	if err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		d.noZeroRange = true
		return false
	}
	d.zeroed += n
	return true
}
