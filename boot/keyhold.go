package boot

import "time"

// keyHold decides the reset button from the key's state sampled over time
// (EVIOCGKEY), not from press events: a key already down at the first
// sample counts from that sample, which is how a person holds a reset
// button while powering a device on. A tap (down, then up before hold) is
// forgotten; only an unbroken hold counts. A press that starts inside the
// window may finish its hold after it.
type keyHold struct {
	hold, window time.Duration
	start        time.Time // the first sample
	since        time.Time // when the key was first seen down in this press; zero when up
}

// see takes the key state at now and reports whether the watch is over
// and, if so, whether the key was held.
func (k *keyHold) see(now time.Time, down bool) (done, held bool) {
	if k.start.IsZero() {
		k.start = now
	}
	switch {
	case down && k.since.IsZero():
		k.since = now
	case !down:
		k.since = time.Time{}
	}
	if !k.since.IsZero() && now.Sub(k.since) >= k.hold {
		return true, true
	}
	if k.since.IsZero() && now.Sub(k.start) >= k.window {
		return true, false
	}
	return false, false
}

// keyBit reports whether code is set in an EVIOCGKEY bitmap (one bit per
// key code, least significant bit first).
func keyBit(bits []byte, code int) bool {
	if code < 0 || code/8 >= len(bits) {
		return false
	}
	return bits[code/8]&(1<<(code%8)) != 0
}
