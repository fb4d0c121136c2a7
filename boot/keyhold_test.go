package boot

import (
	"math"
	"testing"
	"time"
)

// TestKeyHold feeds keyHold the key states a 20 ms poll would see, with a
// 1 s hold and a 3 s window, and checks the decision and when it is made.
func TestKeyHold(t *testing.T) {
	const never = math.MaxInt32
	type press struct{ from, to int } // ms; down in [from, to)
	for _, tc := range []struct {
		name    string
		presses []press
		held    bool
		at      int // ms of the sample that decides
	}{
		{name: "never pressed", held: false, at: 3000},
		{name: "already held when the init looks", presses: []press{{0, never}}, held: true, at: 1000},
		{name: "already held, released before the hold", presses: []press{{0, 500}}, held: false, at: 3000},
		{name: "a tap", presses: []press{{100, 200}}, held: false, at: 3000},
		{name: "taps that add up to more than the hold", presses: []press{{100, 500}, {600, 1000}, {1100, 1500}, {1600, 2000}}, held: false, at: 3000},
		{name: "pressed and held", presses: []press{{500, never}}, held: true, at: 1500},
		{name: "a tap, then pressed and held", presses: []press{{100, 200}, {700, never}}, held: true, at: 1700},
		{name: "held just long enough", presses: []press{{200, 1220}}, held: true, at: 1200},
		{name: "released just before the hold", presses: []press{{200, 1180}}, held: false, at: 3000},
		{name: "pressed late in the window, held past its end", presses: []press{{2900, never}}, held: true, at: 3900},
		{name: "pressed late in the window, released after its end", presses: []press{{2900, 3500}}, held: false, at: 3500},
		{name: "pressed after the window", presses: []press{{3100, never}}, held: false, at: 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := keyHold{hold: time.Second, window: 3 * time.Second}
			base := time.Unix(1000, 0)
			for ms := 0; ms <= 60000; ms += 20 {
				down := false
				for _, p := range tc.presses {
					down = down || ms >= p.from && ms < p.to
				}
				done, held := k.see(base.Add(time.Duration(ms)*time.Millisecond), down)
				if !done {
					continue
				}
				if held != tc.held || ms != tc.at {
					t.Errorf("decided held=%v at %d ms, want held=%v at %d ms", held, ms, tc.held, tc.at)
				}
				return
			}
			t.Fatal("no decision in 60 s")
		})
	}
}

func TestKeyBit(t *testing.T) {
	var bits [keyBytes]byte
	bits[88/8] |= 1 << (88 % 8)   // KEY_F12
	bits[408/8] |= 1 << (408 % 8) // KEY_RESTART
	for code, want := range map[int]bool{88: true, 408: true, 87: false, 89: false, 96: false, 30: false, 0: false, 0x2ff: false, -1: false, 0x300: false} {
		if got := keyBit(bits[:], code); got != want {
			t.Errorf("keyBit(code %d) = %v, want %v", code, got, want)
		}
	}
}
