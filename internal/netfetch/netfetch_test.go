package netfetch

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/ovroot/ovroot/internal/testenv"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const etag = `"v1"`

var modTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testData(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// serve answers as a correct server does: ranges, If-Range, the ETag.
func serve(w http.ResponseWriter, r *http.Request, data []byte, tag string) {
	if tag != "" {
		w.Header().Set("ETag", tag)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// server counts requests and hands each to handle with its number (0 first).
type server struct {
	*httptest.Server
	mu       sync.Mutex
	requests []http.Header
}

func newServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, n int)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.requests)
		s.requests = append(s.requests, r.Header.Clone())
		s.mu.Unlock()
		handle(w, r, n)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// fetch reads url to the end with instant backoff; it returns the bytes,
// the log, the backoffs and the error.
type result struct {
	data    []byte
	log     string
	sleeps  []time.Duration
	resumes int
	err     error
}

func fetch(t *testing.T, url string, o Options) result {
	t.Helper()
	var res result
	var log strings.Builder
	o.Logf = func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...); t.Logf(f, a...) }
	o.Sleep = func(_ context.Context, d time.Duration) error { res.sleeps = append(res.sleeps, d); return nil }
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 5 * time.Second
	}
	r, err := Open(context.Background(), url, o)
	if err != nil {
		res.err, res.log = err, log.String()
		return res
	}
	defer r.Close()
	res.data, res.err = io.ReadAll(r)
	res.log, res.resumes = log.String(), r.Resumes()
	return res
}

func TestResumes(t *testing.T) {
	data := testData(1, 1<<20+17)
	rng := rand.New(rand.NewSource(20))
	var cuts []int
	for i := 0; i < 3; i++ {
		cuts = append(cuts, rng.Intn(len(data)))
	}
	// A cut before the previous one's offset would make no progress:
	// cut i is at absolute offset cuts[i], sorted.
	for i := range cuts {
		for j := i + 1; j < len(cuts); j++ {
			if cuts[j] < cuts[i] {
				cuts[i], cuts[j] = cuts[j], cuts[i]
			}
		}
	}
	lastMod := modTime.Format(http.TimeFormat)
	for _, tc := range []struct {
		name string
		tag  string // "" serves Last-Modified only
	}{
		{"etag", etag},
		{"last-modified", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var starts []int
			s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				start := 0
				fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start)
				starts = append(starts, start)
				var ww http.ResponseWriter = w
				if n < len(cuts) {
					ww = &testenv.CutWriter{ResponseWriter: w, Limit: cuts[n] - start}
				}
				if tc.tag != "" {
					w.Header().Set("ETag", tc.tag)
				}
				http.ServeContent(ww, r, "", modTime, bytes.NewReader(data))
			})
			var progress []Progress
			res := fetch(t, s.URL+"/x.bundle", Options{Progress: func(p Progress) { progress = append(progress, p) }})
			if res.err != nil {
				t.Fatalf("fetch: %v", res.err)
			}
			if !bytes.Equal(res.data, data) {
				t.Fatalf("read %d bytes that differ from the %d served", len(res.data), len(data))
			}
			if res.resumes != 3 || strings.Count(res.log, "retry") != 3 {
				t.Errorf("resumes = %d, log:\n%s\nwant 3", res.resumes, res.log)
			}
			if want := []int{0, cuts[0], cuts[1], cuts[2]}; fmt.Sprint(starts) != fmt.Sprint(want) {
				t.Errorf("requests started at %v, want %v", starts, want)
			}
			wantIfRange := tc.tag
			if wantIfRange == "" {
				wantIfRange = lastMod
			}
			if got := s.requests[1].Get("If-Range"); got != wantIfRange {
				t.Errorf("If-Range = %q, want %q", got, wantIfRange)
			}
			if got := s.requests[0].Get("Accept-Encoding"); got != "" {
				t.Errorf("the first request asks for Accept-Encoding %q: lengths would be the compressed ones", got)
			}
			if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}; fmt.Sprint(res.sleeps) != fmt.Sprint(want) {
				t.Errorf("backoffs = %v, want %v", res.sleeps, want)
			}
			last := progress[len(progress)-1]
			if last != (Progress{Done: int64(len(data)), Total: int64(len(data)), Resumes: 3}) {
				t.Errorf("last progress = %+v", last)
			}
		})
	}
}

// TestShortReads: a body trickled out in small writes is whole, no resume.
func TestShortReads(t *testing.T) {
	data := testData(2, 100_000)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Header().Set("ETag", etag)
		for i := 0; i < len(data); i += 777 {
			w.Write(data[i:min(i+777, len(data))])
			w.(http.Flusher).Flush()
		}
	})
	res := fetch(t, s.URL, Options{})
	if res.err != nil || !bytes.Equal(res.data, data) || res.resumes != 0 {
		t.Fatalf("fetch: %d bytes, %d resumes, %v", len(res.data), res.resumes, res.err)
	}
}

// TestStall: a body that stops coming is a drop once the idle timeout
// passes, and resumes.
func TestStall(t *testing.T) {
	data := testData(3, 300_000)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 0: // headers, some bytes, then silence
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Header().Set("ETag", etag)
			w.Write(data[:1000])
			w.(http.Flusher).Flush()
			stall(r)
		case 1: // no headers at all
			stall(r)
		default:
			serve(w, r, data, etag)
		}
	})
	res := fetch(t, s.URL, Options{IdleTimeout: 200 * time.Millisecond})
	if res.err != nil || !bytes.Equal(res.data, data) {
		t.Fatalf("fetch: %d bytes, %v", len(res.data), res.err)
	}
	for _, want := range []string{"no data for 200ms", "no response for 200ms"} {
		if !strings.Contains(res.log, want) {
			t.Errorf("log lacks %q:\n%s", want, res.log)
		}
	}
	if res.resumes != 2 {
		t.Errorf("resumes = %d, want 2", res.resumes)
	}
}

func stall(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

// TestIgnoresRanges: a 200 with the same ETag to a range request is read
// from 0 and the bytes already delivered are skipped.
func TestIgnoresRanges(t *testing.T) {
	data := testData(4, 500_000)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		r.Header.Del("Range")
		var ww http.ResponseWriter = w
		switch n {
		case 0:
			ww = &testenv.CutWriter{ResponseWriter: w, Limit: 123_456}
		case 1: // also cut while the skipped part is being read
			ww = &testenv.CutWriter{ResponseWriter: w, Limit: 100_000}
		}
		serve(ww, r, data, etag)
	})
	res := fetch(t, s.URL, Options{})
	if res.err != nil || !bytes.Equal(res.data, data) {
		t.Fatalf("fetch: %d bytes, %v", len(res.data), res.err)
	}
	if !strings.Contains(res.log, "server ignores ranges: restarting from 0, skipping 123456 bytes") {
		t.Errorf("log:\n%s", res.log)
	}
}

// TestRefuses: responses that would splice two files or are errors.
func TestRefuses(t *testing.T) {
	data := testData(5, 200_000)
	other := testData(6, 200_000)
	const cut = 70_000
	firstCut := func(w http.ResponseWriter, r *http.Request) {
		serve(&testenv.CutWriter{ResponseWriter: w, Limit: cut}, r, data, etag)
	}
	partial := func(w http.ResponseWriter, cr string, body []byte, tag string) {
		w.Header().Set("Content-Range", cr)
		w.Header().Set("ETag", tag)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body)
	}
	for _, tc := range []struct {
		name     string
		handle   func(w http.ResponseWriter, r *http.Request, n int)
		want     string
		requests int
	}{
		{"wrong start", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 0 {
				firstCut(w, r)
				return
			}
			partial(w, fmt.Sprintf("bytes %d-%d/%d", cut-100, len(data)-1, len(data)), data[cut-100:], etag)
		}, "the server sent bytes from 69900", 2},
		{"wrong total", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 0 {
				firstCut(w, r)
				return
			}
			partial(w, fmt.Sprintf("bytes %d-%d/%d", cut, len(data), len(data)+1), append(data[cut:len(data):len(data)], 'x'), etag)
		}, "the file is 200001 now, 200000 at the start", 2},
		{"not the rest", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 0 {
				firstCut(w, r)
				return
			}
			partial(w, fmt.Sprintf("bytes %d-%d/%d", cut, cut+9, len(data)), data[cut:cut+10], etag)
		}, "not the rest of the file", 2},
		{"garbled content-range", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 0 {
				firstCut(w, r)
				return
			}
			partial(w, "bytes=70000-", data[cut:], etag)
		}, `bad Content-Range "bytes=70000-"`, 2},
		{"etag changed, If-Range honoured", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 0 {
				firstCut(w, r)
				return
			}
			serve(w, r, other, `"v2"`) // If-Range "v1" fails: 200 with the new file
		}, `changed on the server during the download (ETag "v1" → "v2"): start the upgrade again`, 2},
		{"etag changed, If-Range ignored", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 0 {
				firstCut(w, r)
				return
			}
			r.Header.Del("If-Range")
			serve(w, r, other, `"v2"`) // 206 of the new file
		}, `(ETag "v1" → "v2")`, 2},
		{"etag gone", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 0 {
				firstCut(w, r)
				return
			}
			serve(w, r, data, "")
		}, `(ETag "v1" → none)`, 2},
		{"no validator", func(w http.ResponseWriter, r *http.Request, n int) {
			serve(&testenv.CutWriter{ResponseWriter: w, Limit: cut}, r, data, "")
		}, "the server sent neither ETag nor Last-Modified", 1},
		{"404", func(w http.ResponseWriter, r *http.Request, n int) {
			http.NotFound(w, r)
		}, "/x.bundle: 404 Not Found", 1},
		{"403", func(w http.ResponseWriter, r *http.Request, n int) {
			http.Error(w, "no", http.StatusForbidden)
		}, "/x.bundle: 403 Forbidden", 1},
		{"500 forever", func(w http.ResponseWriter, r *http.Request, n int) {
			http.Error(w, "down", http.StatusInternalServerError)
		}, "giving up after 8 retries at byte 0 of unknown length: GET http", 9},
		{"416 on resume", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 0 {
				firstCut(w, r)
				return
			}
			http.Error(w, "no", http.StatusRequestedRangeNotSatisfiable)
		}, "resuming at byte 70000: GET http", 2},
		{"no length: read to the end", func(w http.ResponseWriter, r *http.Request, n int) {
			w.Header().Set("ETag", etag)
			w.Write(data)
		}, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.handle)
			res := fetch(t, s.URL+"/x.bundle", Options{})
			if tc.want == "" {
				if res.err != nil || !bytes.Equal(res.data, data) {
					t.Fatalf("fetch: %d bytes, %v", len(res.data), res.err)
				}
				return
			}
			if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
				t.Fatalf("fetch error = %v, want one containing %q", res.err, tc.want)
			}
			if len(res.data) > cut {
				t.Errorf("%d bytes delivered, more than the first response's %d", len(res.data), cut)
			}
			if got := s.count(); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
		})
	}
}

// TestRetries: 5xx answers, on the first request and on a resume, are
// retried.
func TestRetries(t *testing.T) {
	data := testData(7, 100_000)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 0:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		case 1:
			serve(&testenv.CutWriter{ResponseWriter: w, Limit: 5000}, r, data, etag)
		case 2:
			http.Error(w, "oops", http.StatusInternalServerError)
		default:
			serve(w, r, data, etag)
		}
	})
	res := fetch(t, s.URL, Options{})
	if res.err != nil || !bytes.Equal(res.data, data) {
		t.Fatalf("fetch: %d bytes, %v", len(res.data), res.err)
	}
	for _, want := range []string{"503 Service Unavailable; retry 1 of 8 at byte 0", "unexpected EOF; retry 2 of 8 at byte 5000 of 100000", "500 Internal Server Error; retry 3 of 8 at byte 5000"} {
		if !strings.Contains(res.log, want) {
			t.Errorf("log lacks %q:\n%s", want, res.log)
		}
	}
}

func TestCancel(t *testing.T) {
	data := testData(8, 100_000)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Header().Set("ETag", etag)
		w.Write(data[:10])
		w.(http.Flusher).Flush()
		stall(r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	r, err := Open(ctx, s.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v, want context.Canceled", err)
	}
	if s.count() != 1 {
		t.Errorf("%d requests after a cancel, want 1", s.count())
	}
}

func TestTLS(t *testing.T) {
	data := testData(9, 50_000)
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serve(w, r, data, etag) }))
	defer s.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(ca, pemData, 0o644); err != nil {
		t.Fatal(err)
	}
	res := fetch(t, s.URL, Options{CAFile: ca})
	if res.err != nil || !bytes.Equal(res.data, data) {
		t.Fatalf("with the CA: %d bytes, %v", len(res.data), res.err)
	}
	t.Setenv("SSL_CERT_FILE", filepath.Join(t.TempDir(), "none.pem")) // no system root may know it
	res = fetch(t, s.URL, Options{})
	if res.err == nil || !strings.Contains(res.err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("without the CA: %v, want unknown authority", res.err)
	}
	if len(res.sleeps) != 0 {
		t.Errorf("an untrusted certificate was retried %d times", len(res.sleeps))
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not pem"), 0o644)
	if _, err := Open(context.Background(), s.URL, Options{CAFile: empty}); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a CA file without certificates: %v", err)
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                 string
		first, last, total int64
		bad                bool
	}{
		{in: "bytes 0-9/10", first: 0, last: 9, total: 10},
		{in: "bytes 5-9/*", first: 5, last: 9, total: -1},
		{in: "bytes 5-9/9", bad: true},
		{in: "bytes 9-5/10", bad: true},
		{in: "bytes -1-5/10", bad: true},
		{in: "bytes */10", bad: true},
		{in: "items 0-9/10", bad: true},
		{in: "", bad: true},
	} {
		f, l, tot, err := parseContentRange(tc.in)
		if tc.bad != (err != nil) || !tc.bad && (f != tc.first || l != tc.last || tot != tc.total) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v", tc.in, f, l, tot, err)
		}
	}
}
