package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
	"github.com/ovroot/ovroot/slot"
)

// isURL says whether an upgrade argument names a network source: an
// http(s) URL or an OCI registry reference (oci://REGISTRY/REPO:TAG).
func isURL(arg string) bool {
	return strings.HasPrefix(arg, "https://") || strings.HasPrefix(arg, "http://") || strings.HasPrefix(arg, "oci://")
}

// progressEvent is one --progress=json line. Pass is "check" while every
// byte is verified and "write" while the same bytes are read again and
// written (upgrade reads a bundle twice).
type progressEvent struct {
	Pass    string `json:"pass"`
	Done    int64  `json:"done"`
	Total   int64  `json:"total"`
	Resumes int    `json:"resumes"`
}

// progressReporter prints a source's progress: in text a line every
// tenth while checking a URL (writing has its own lines, from package
// slot), in JSON one object a line on stderr each percent, each resume
// and at the end, and the log lines as {"message": ...}.
type progressReporter struct {
	w            io.Writer
	json         bool
	what         string
	pass         string
	last         progressEvent
	lastTenths   int64
	printedFirst bool
}

func (p *progressReporter) report(e progressEvent) {
	if p == nil || p.w == nil {
		return
	}
	e.Pass = p.pass
	if p.json {
		step := e.Total / 100
		if e.Total < 0 || step < 1 {
			step = 1 << 20
		}
		if p.printedFirst && e.Resumes == p.last.Resumes && e.Done != e.Total && e.Done/step == p.last.Done/step {
			return
		}
		p.printedFirst = true
		p.last = e
		line, _ := json.Marshal(e)
		fmt.Fprintf(p.w, "%s\n", line)
		return
	}
	if p.pass != "check" || e.Total <= 0 {
		return
	}
	if tenths := e.Done * 10 / e.Total; tenths > p.lastTenths {
		p.lastTenths = tenths
		fmt.Fprintf(p.w, "upgrade: checking %s: %d%% (%d/%d MiB)\n", p.what, tenths*10, e.Done>>20, e.Total>>20)
	}
}

func (p *progressReporter) logf(format string, args ...any) {
	if p.w == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if p.json {
		line, _ := json.Marshal(struct {
			Message string `json:"message"`
		}{msg})
		fmt.Fprintf(p.w, "%s\n", line)
		return
	}
	fmt.Fprintf(p.w, "upgrade: %s\n", msg)
}

// netOptions are what a network source needs from the image and the
// command line.
type netOptions struct {
	CAFile string // "" the system roots
	// AllowHTTP lets an oci:// registry that speaks only plain http be
	// used ([update] allow_http).
	AllowHTTP bool
	// Root prefixes the registry credentials file's path (tests).
	Root     string
	Logf     func(format string, args ...any)
	Progress func(done, total int64, resumes int)
	Sleep    func(ctx context.Context, d time.Duration) error
	Stall    time.Duration // 0: netfetch's default
	Retries  int           // 0: netfetch's default; < 0: none
}

// bundleSource is where upgrade reads arg: a file or block device, or an
// http(s) URL as the running image's update policy allows. Each open is
// one pass (check, then write) and reports its progress.
func (c Context) bundleSource(ctx context.Context, arg string, pol layout.UpdatePolicy, p *progressReporter) (slot.BundleSource, error) {
	passes := []string{"check", "write"}
	opens := 0
	nextPass := func() {
		if p != nil {
			p.pass = passes[min(opens, 1)]
			p.printedFirst, p.lastTenths = false, 0
		}
		opens++
	}
	if !isURL(arg) {
		file := slot.FileBundle(arg)
		return slot.BundleSource{Name: arg, Open: func() (io.ReadCloser, error) {
			nextPass()
			r, err := file.Open()
			if err != nil || p == nil || !p.json {
				return r, err
			}
			total := int64(-1)
			if fi, err := os.Stat(arg); err == nil && fi.Mode().IsRegular() {
				total = fi.Size()
			}
			return &countingReader{ReadCloser: r, total: total, report: p.report}, nil
		}}, nil
	}
	if strings.HasPrefix(arg, "http://") && !pol.AllowHTTP {
		return slot.BundleSource{}, fmt.Errorf("%s: plain http:// is refused: this image fetches updates over https:// only ([update] allow_http is false)", arg)
	}
	o := netOptions{Sleep: c.NetSleep, AllowHTTP: pol.AllowHTTP, Root: c.Root, Stall: c.NetStall, Retries: c.NetRetries}
	if pol.CA != "" {
		o.CAFile = c.path(layout.RomDir + pol.CA)
	}
	if p != nil {
		o.Logf = p.logf
		o.Progress = func(done, total int64, resumes int) {
			p.report(progressEvent{Done: done, Total: total, Resumes: resumes})
		}
	}
	return slot.BundleSource{Name: arg, Open: func() (io.ReadCloser, error) {
		nextPass()
		return openURL(ctx, arg, o)
	}}, nil
}

// countingReader reports a file source's progress.
type countingReader struct {
	io.ReadCloser
	done, total int64
	report      func(progressEvent)
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.done += int64(n)
	if n > 0 || err == io.EOF {
		r.report(progressEvent{Done: r.done, Total: r.total})
	}
	return n, err
}
