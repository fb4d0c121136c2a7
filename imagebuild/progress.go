package imagebuild

import (
	"fmt"
	"io"
	"os"
	"time"
)

// showProgress writes a status line to w every second while a long step
// runs ("squashfs: 12s, 340 MiB written"), rewritten in place with \r, and
// clears it when stop is called. w is a terminal or nil (quiet: pipes and
// logs get only the phase lines). mksquashfs's own progress bar is not
// used: with -quiet it draws nothing, and without it prints a summary
// the phase lines already give.
func showProgress(w io.Writer, what, output string) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		shown := false
		for {
			select {
			case <-done:
				if shown {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-tick.C:
				size := int64(0)
				if fi, err := os.Stat(output); err == nil {
					size = fi.Size()
				}
				fmt.Fprintf(w, "\r\033[Kovroot: %s: %s, %d MiB written", what, time.Since(start).Round(time.Second), size>>20)
				shown = true
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
