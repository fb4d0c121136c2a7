// Package netfetch reads one file over HTTP or HTTPS from start to end and
// resumes it where it stopped when the connection drops or stalls, with
// range requests (RFC 9110 §14: Range, Content-Range; §13.1.5: If-Range).
//
// It reads sequentially and keeps nothing: no temporary copy, no seeking.
// A resumed body is spliced onto what was read only when the server proves
// it is the same file: a 206 whose Content-Range starts exactly at the
// next byte and has the first response's total, answered to an If-Range
// carrying the first response's validator. A server that ignores ranges
// (200 with the same validator) is read again from 0 and the bytes
// already delivered are skipped; a changed file (200 with another
// validator) is an error, as is a server that sends no validator at all
// once a resume is needed: without one nothing tells two files apart.
//
// It does not verify what it reads (the bundle reader does that) and
// knows nothing of bundles, registries or slots.
package netfetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Logf logs one line.
type Logf func(format string, args ...any)

// Progress is how far a download is.
type Progress struct {
	Done    int64 // bytes delivered to the caller
	Total   int64 // the file's length, -1 unknown
	Resumes int   // resumes so far
}

// Options tune Open. The zero value works: system roots, 30 s idle
// timeout, 8 resumes with backoff from 1 s to 1 min.
type Options struct {
	// CAFile is a PEM bundle of the CAs to trust instead of the system
	// roots (on Linux Go reads /etc/ssl/certs/ca-certificates.crt and the
	// other usual places, or $SSL_CERT_FILE).
	CAFile string
	// Client replaces the HTTP client built from CAFile (tests).
	Client *http.Client
	// IdleTimeout is how long a request may wait for its response
	// headers or for the next body byte before it counts as a drop.
	IdleTimeout time.Duration
	// MaxResumes bounds the requests after the first (each drop or
	// retryable status costs one); 0 is 8, negative is none.
	MaxResumes int
	// Backoff is the wait before the first retry; it doubles up to
	// MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Sleep waits d or until ctx ends (tests make it instant).
	Sleep func(ctx context.Context, d time.Duration) error
	// Logf receives one line per retry and resume; nil discards them.
	Logf Logf
	// Progress is called after every read that delivered bytes.
	Progress func(Progress)
}

const (
	defaultIdle       = 30 * time.Second
	defaultResumes    = 8
	defaultBackoff    = time.Second
	defaultMaxBackoff = time.Minute
)

// Reader is an open download. Read it to the end; Close it.
type Reader struct {
	ctx    context.Context
	url    string
	o      Options
	client *http.Client

	total    int64  // -1 unknown
	etag     string // the first response's, "" none
	modified string // its Last-Modified
	done     int64
	resumes  int
	body     io.ReadCloser
	cancel   context.CancelFunc
	idle     *time.Timer
	mu       sync.Mutex
	stalled  bool // the idle timer ended the current request
	gen      int  // requests sent: a late timer of an old one is ignored
	closed   bool
	why      error // why the last body ended: the next resume reports it
}

// StatusError is a response that is not the file.
type StatusError struct {
	URL    string
	Status string
	Code   int
}

func (e *StatusError) Error() string { return fmt.Sprintf("GET %s: %s", e.URL, e.Status) }

// Open requests url and returns its body as a Reader that resumes.
// Network errors and 5xx, 408 and 429 responses are retried with backoff;
// any other status is an error naming it and the URL.
func Open(ctx context.Context, url string, o Options) (*Reader, error) {
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("%s: not an http:// or https:// URL", url)
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = defaultIdle
	}
	if o.MaxResumes == 0 {
		o.MaxResumes = defaultResumes
	}
	if o.Backoff <= 0 {
		o.Backoff = defaultBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = defaultMaxBackoff
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	r := &Reader{ctx: ctx, url: url, o: o, client: o.Client, total: -1}
	if r.client == nil {
		c, err := NewClient(o.CAFile)
		if err != nil {
			return nil, err
		}
		r.client = c
	}
	for {
		resp, err := r.get(nil)
		if err == nil && resp.StatusCode == http.StatusOK {
			r.body = resp.Body
			r.total = resp.ContentLength
			r.etag = strongETag(resp.Header.Get("ETag"))
			r.modified = resp.Header.Get("Last-Modified")
			return r, nil
		}
		if err == nil {
			resp.Body.Close()
			r.stop()
			err = &StatusError{URL: url, Status: resp.Status, Code: resp.StatusCode}
			if !retryable(resp.StatusCode) {
				return nil, err
			}
		}
		if permanent(err) {
			return nil, err
		}
		if werr := r.wait(err); werr != nil {
			return nil, werr
		}
	}
}

// permanent is an error no retry can mend: a certificate this client
// does not trust.
func permanent(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci)
}

// NewClient is an HTTP client that trusts the CAs in the PEM file caFile,
// or the system roots when caFile is "". It never asks for compressed
// bodies: Go's transparent gzip would make lengths and offsets those of
// the compressed stream.
func NewClient(caFile string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableCompression = true
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read the CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", caFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t}, nil
}

// Total is the file's length, -1 when the server did not say.
func (r *Reader) Total() int64 { return r.total }

// Resumes is how many times the download was resumed or retried.
func (r *Reader) Resumes() int { return r.resumes }

// Read reads the next bytes of the file, resuming as needed.
func (r *Reader) Read(p []byte) (int, error) {
	for {
		if r.closed {
			return 0, errors.New("netfetch: read after close")
		}
		if r.body == nil {
			if err := r.resume(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		if n > 0 {
			r.done += int64(n)
			r.idle.Reset(r.o.IdleTimeout)
			if r.o.Progress != nil {
				r.o.Progress(Progress{Done: r.done, Total: r.total, Resumes: r.resumes})
			}
		}
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (r.total < 0 || r.done == r.total):
			return n, io.EOF
		case err == io.EOF && r.done > r.total:
			return n, fmt.Errorf("GET %s: %d bytes, more than the %d announced", r.url, r.done, r.total)
		case err == io.EOF:
			// net/http says ErrUnexpectedEOF for a body shorter than
			// its Content-Length; a 206's own length could still be
			// met short of the total.
			err = io.ErrUnexpectedEOF
		}
		if cerr := r.ctx.Err(); cerr != nil {
			return n, cerr
		}
		if r.wasStalled() {
			err = fmt.Errorf("no data for %v", r.o.IdleTimeout)
		}
		r.drop(err)
		if n > 0 {
			return n, nil
		}
	}
}

// Close ends the download.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.stop()
	return nil
}

func (r *Reader) drop(err error) {
	r.body.Close()
	r.body = nil
	r.stop()
	r.why = err
}

// resume requests the rest of the file after a drop.
func (r *Reader) resume() error {
	why := r.why
	for {
		if r.etag == "" && r.modified == "" {
			return fmt.Errorf("GET %s: the connection failed at byte %d of %s (%v), and the server sent neither ETag nor Last-Modified: a resumed download could not be proven to be the same file, so it is not resumed", r.url, r.done, size(r.total), why)
		}
		if err := r.wait(why); err != nil {
			return err
		}
		h := http.Header{"Range": {fmt.Sprintf("bytes=%d-", r.done)}}
		if r.etag != "" {
			h.Set("If-Range", r.etag)
		} else {
			h.Set("If-Range", r.modified)
		}
		resp, err := r.get(h)
		if err != nil && permanent(err) {
			return err
		}
		if err != nil {
			why = err
			continue
		}
		switch code := resp.StatusCode; {
		case code == http.StatusPartialContent:
			if err := r.checkPartial(resp); err != nil {
				resp.Body.Close()
				r.stop()
				return err
			}
			r.body = resp.Body
			return nil
		case code == http.StatusOK:
			if err := r.checkSame(resp); err != nil {
				resp.Body.Close()
				r.stop()
				return err
			}
			r.o.Logf("%s: server ignores ranges: restarting from 0, skipping %d bytes", r.url, r.done)
			r.body = resp.Body
			if err := r.skip(r.done); err != nil {
				r.body.Close()
				r.body = nil
				r.stop()
				why = err
				continue
			}
			return nil
		default:
			resp.Body.Close()
			r.stop()
			err := &StatusError{URL: r.url, Status: resp.Status, Code: code}
			if !retryable(code) {
				return fmt.Errorf("resuming at byte %d: %w", r.done, err)
			}
			why = err
		}
	}
}

// checkPartial accepts a 206 only for the bytes from r.done to the end of
// the same file.
func (r *Reader) checkPartial(resp *http.Response) error {
	cr := resp.Header.Get("Content-Range")
	first, last, total, err := parseContentRange(cr)
	if err != nil {
		return fmt.Errorf("GET %s resuming at byte %d: %w", r.url, r.done, err)
	}
	if first != r.done {
		return fmt.Errorf("GET %s resuming at byte %d: the server sent bytes from %d (Content-Range %q): not splicing them", r.url, r.done, first, cr)
	}
	if r.total >= 0 && total != r.total {
		return fmt.Errorf("GET %s resuming at byte %d: the file is %s now, %d at the start (Content-Range %q): it changed on the server, start again", r.url, r.done, size(total), r.total, cr)
	}
	if total >= 0 && last != total-1 {
		return fmt.Errorf("GET %s resuming at byte %d: the server sent bytes %d-%d of %d, not the rest of the file", r.url, r.done, first, last, total)
	}
	if e := strongETag(resp.Header.Get("ETag")); r.etag != "" && e != "" && e != r.etag {
		return r.changed("ETag", r.etag, e)
	}
	if r.total < 0 {
		r.total = total
	}
	return nil
}

// checkSame accepts a 200 to a range request only if it is the same file.
func (r *Reader) checkSame(resp *http.Response) error {
	if r.etag != "" {
		if e := strongETag(resp.Header.Get("ETag")); e != r.etag {
			return r.changed("ETag", r.etag, e)
		}
	} else if m := resp.Header.Get("Last-Modified"); m != r.modified {
		return r.changed("Last-Modified", r.modified, m)
	}
	if resp.ContentLength != r.total {
		return fmt.Errorf("GET %s: the file is %s now, %s at the start: it changed on the server during the download: start the upgrade again", r.url, size(resp.ContentLength), size(r.total))
	}
	return nil
}

func (r *Reader) changed(what, old, new string) error {
	if new == "" {
		new = "none"
	}
	return fmt.Errorf("%s changed on the server during the download (%s %s → %s): start the upgrade again", r.url, what, old, new)
}

// skip discards the first n bytes of a body read again from 0.
func (r *Reader) skip(n int64) error {
	got, err := io.CopyN(io.Discard, idleReader{r}, n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && r.wasStalled() {
		err = fmt.Errorf("no data for %v", r.o.IdleTimeout)
	}
	if err != nil {
		return fmt.Errorf("skipping the %d bytes read before: %w at %d", n, err, got)
	}
	return nil
}

// idleReader reads the current body and keeps the idle timer from firing.
type idleReader struct{ r *Reader }

func (i idleReader) Read(p []byte) (int, error) {
	n, err := i.r.body.Read(p)
	if n > 0 {
		i.r.idle.Reset(i.r.o.IdleTimeout)
	}
	return n, err
}

// get sends one GET whose context the idle timer cancels.
func (r *Reader) get(h http.Header) (*http.Response, error) {
	ctx, cancel := context.WithCancel(r.ctx)
	r.mu.Lock()
	r.stalled = false
	r.gen++
	gen := r.gen
	r.mu.Unlock()
	r.cancel = cancel
	r.idle = time.AfterFunc(r.o.IdleTimeout, func() {
		r.mu.Lock()
		r.stalled = r.gen == gen
		r.mu.Unlock()
		cancel()
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		r.stop()
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.stop()
		if r.wasStalled() {
			err = fmt.Errorf("no response for %v", r.o.IdleTimeout)
		}
		return nil, err
	}
	return resp, nil
}

func (r *Reader) stop() {
	if r.idle != nil {
		r.idle.Stop()
	}
	if r.cancel != nil {
		r.cancel()
	}
}

func (r *Reader) wasStalled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stalled
}

// wait counts one retry and sleeps its backoff, or says the retries are
// spent.
func (r *Reader) wait(why error) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if r.resumes >= r.o.MaxResumes {
		return fmt.Errorf("GET %s: giving up after %d retries at byte %d of %s: %w", r.url, r.resumes, r.done, size(r.total), why)
	}
	d := r.o.Backoff << r.resumes
	if d > r.o.MaxBackoff || d <= 0 {
		d = r.o.MaxBackoff
	}
	r.resumes++
	r.o.Logf("%s: %v; retry %d of %d at byte %d of %s in %v", r.url, why, r.resumes, r.o.MaxResumes, r.done, size(r.total), d)
	return r.o.Sleep(r.ctx, d)
}

func retryable(code int) bool {
	return code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

// strongETag is the ETag if If-Range may carry it: RFC 9110 §13.1.5
// allows only strong validators there.
func strongETag(e string) string {
	if strings.HasPrefix(e, "W/") {
		return ""
	}
	return e
}

// parseContentRange parses "bytes FIRST-LAST/TOTAL" (TOTAL may be "*":
// returned as -1).
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= last {
			return 0, 0, 0, bad
		}
	}
	return first, last, total, nil
}

func size(n int64) string {
	if n < 0 {
		return "unknown length"
	}
	return strconv.FormatInt(n, 10)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
