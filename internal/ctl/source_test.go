//go:build !ovroot_nonet

package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
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

	"github.com/ovroot/ovroot/layout"
)

// bundleServer serves data over TLS, cutting the first two responses.
func bundleServer(t *testing.T, data []byte) *httptest.Server {
	requests := 0
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		var ww http.ResponseWriter = w
		switch requests {
		case 1:
			ww = &testenv.CutWriter{ResponseWriter: w, Limit: 100_000}
		case 2:
			ww = &testenv.CutWriter{ResponseWriter: w, Limit: 150_000}
		}
		w.Header().Set("ETag", `"b1"`)
		http.ServeContent(ww, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(s.Close)
	return s
}

// writeCA puts the server's CA where the image's [update] ca says, in the
// read-only root.
func writeCA(t *testing.T, root string, s *httptest.Server) string {
	t.Helper()
	const ca = "/etc/ssl/updates-ca.pem"
	p := filepath.Join(root, layout.RomDir, ca)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

func noSleep(context.Context, time.Duration) error { return nil }

// TestBundleSourceURL: both passes read the whole bundle through the
// drops, with the image's CA, and --progress=json says how far each got.
func TestBundleSourceURL(t *testing.T) {
	data := make([]byte, 300_000)
	rand.New(rand.NewSource(1)).Read(data)
	s := bundleServer(t, data)
	root := t.TempDir()
	pol := layout.UpdatePolicy{CA: writeCA(t, root, s)}
	var stderr bytes.Buffer
	c := Context{Root: root, NetSleep: noSleep}
	p := &progressReporter{w: &stderr, json: true, what: s.URL}
	src, err := c.bundleSource(context.Background(), s.URL+"/3.bundle", pol, p)
	if err != nil {
		t.Fatal(err)
	}
	for pass := 1; pass <= 2; pass++ {
		r, err := src.Open()
		if err != nil {
			t.Fatalf("open %d: %v", pass, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("pass %d: %d bytes, %v", pass, len(got), err)
		}
	}
	var events []progressEvent
	var messages []string
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var m struct {
			progressEvent
			Message *string `json:"message"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stderr line %q is not JSON: %v", line, err)
		}
		if m.Message != nil {
			messages = append(messages, *m.Message)
			continue
		}
		events = append(events, m.progressEvent)
	}
	if len(messages) != 2 || !strings.Contains(messages[0], "retry 1 of 8 at byte 100000 of 300000") {
		t.Errorf("messages = %q, want the two resumes of the first pass", messages)
	}
	want := []progressEvent{{Pass: "check", Done: 300_000, Total: 300_000, Resumes: 2}, {Pass: "write", Done: 300_000, Total: 300_000, Resumes: 0}}
	var ends []progressEvent
	for _, e := range events {
		if e.Done == e.Total {
			ends = append(ends, e)
		}
	}
	if fmt.Sprint(ends) != fmt.Sprint(want) {
		t.Errorf("final progress = %+v, want %+v", ends, want)
	}
	if n := len(events); n < 20 || n > 250 {
		t.Errorf("%d progress lines for two passes, want about one a percent", n)
	}
}

func TestBundleSourceRefuses(t *testing.T) {
	data := []byte("a bundle")
	s := bundleServer(t, data)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"b1"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	defer plain.Close()
	t.Setenv("SSL_CERT_FILE", filepath.Join(t.TempDir(), "none.pem")) // no system root knows the test CA
	root := t.TempDir()
	ca := writeCA(t, root, s)
	c := Context{Root: root, NetSleep: noSleep}
	for _, tc := range []struct {
		name string
		url  string
		pol  layout.UpdatePolicy
		want string // "" reads data
	}{
		{"http without allow_http", plain.URL, layout.UpdatePolicy{}, "plain http:// is refused: this image fetches updates over https:// only ([update] allow_http is false)"},
		{"http with allow_http", plain.URL, layout.UpdatePolicy{AllowHTTP: true}, ""},
		{"https, the image names no CA", s.URL, layout.UpdatePolicy{}, "certificate signed by unknown authority"},
		{"https, the CA file is missing", s.URL, layout.UpdatePolicy{CA: "/etc/ssl/gone.pem"}, "read the CA bundle"},
		{"https with the image's CA", s.URL, layout.UpdatePolicy{CA: ca}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := c.bundleSource(context.Background(), tc.url, tc.pol, nil)
			var got []byte
			if err == nil {
				var r io.ReadCloser
				if r, err = src.Open(); err == nil {
					got, err = io.ReadAll(r)
					r.Close()
				}
			}
			if tc.want == "" {
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("read %q, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

// TestProgressText: text progress says how far the check of a URL got;
// writing has its own lines (package slot).
func TestProgressText(t *testing.T) {
	var out bytes.Buffer
	p := &progressReporter{w: &out, what: "https://u/x.bundle", pass: "check"}
	for done := int64(0); done <= 50<<20; done += 1 << 20 {
		p.report(progressEvent{Done: done, Total: 50 << 20})
	}
	p.pass = "write"
	p.report(progressEvent{Done: 1, Total: 50 << 20})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 10 || lines[9] != "upgrade: checking https://u/x.bundle: 100% (50/50 MiB)" {
		t.Errorf("progress:\n%s", out.String())
	}
}

// upgrade's --stall and --retries reach the download: a server that sends
// its headers and then nothing is given up on after the stall and the
// retries asked for, with an error that says so; bad values are refused
// before anything is read.
func TestUpgradeStallRetries(t *testing.T) {
	release := make(chan struct{})
	var requests int
	var mu sync.Mutex
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		w.Header().Set("Content-Length", "1000")
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer s.Close()
	defer close(release)
	root := t.TempDir()
	c := Context{Root: root, NetSleep: noSleep, NetStall: 200 * time.Millisecond, NetRetries: 2}
	src, err := c.bundleSource(context.Background(), s.URL+"/3.bundle", layout.UpdatePolicy{AllowHTTP: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := src.Open()
	if err == nil {
		_, err = io.ReadAll(r)
		r.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "no data for 200ms") {
		t.Errorf("a stalled server: %v, want an error saying no data for 200ms", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("gave up after %v", d)
	}
	mu.Lock()
	if requests != 3 {
		t.Errorf("%d requests, want 3 (the first and 2 retries)", requests)
	}
	mu.Unlock()
	for _, args := range [][]string{{"upgrade", "--stall", "0s", s.URL}, {"upgrade", "--retries", "-1", s.URL}} {
		err := Context{Stdout: io.Discard, Stderr: io.Discard, Args: args, Root: root}.Execute(context.Background())
		if err == nil || !strings.Contains(err.Error(), "want a duration above 0") {
			t.Errorf("%v: %v, want refused", args, err)
		}
	}
}
