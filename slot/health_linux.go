package slot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ovroot/ovroot/layout"
)

// Health checks gate the confirmation of a trial boot: before mark-good or
// confirm_after confirms a slot on trial, every executable in
// layout.HealthDir of the running root runs, one after another, each with
// a timeout. Any failure leaves the slot on trial (the loader goes on
// counting, and falls back when the tries are used up). The result is
// written to layout.HealthFile (RAM: a power cut during the checks changes
// nothing on disk) for ovrootctl status, and a failure to the slot log.

// DefaultHealthTimeout is how long one check may run.
const DefaultHealthTimeout = 60 * time.Second

// HealthResult is layout.HealthFile.
type HealthResult struct {
	Time   time.Time     `json:"time"`
	Slot   layout.Slot   `json:"slot"`
	Build  string        `json:"build_id"`
	Passed bool          `json:"passed"`
	Checks []HealthCheck `json:"checks"`
}

// HealthCheck is one check's result.
type HealthCheck struct {
	Name       string `json:"name"`
	OK         bool   `json:"ok"`
	Why        string `json:"why,omitempty"` // "exit status 1", "timed out after 60s"
	Output     string `json:"output,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// Failed is the first failed check, nil when all passed.
func (r HealthResult) Failed() *HealthCheck {
	for i := range r.Checks {
		if !r.Checks[i].OK {
			return &r.Checks[i]
		}
	}
	return nil
}

// Summary is one line for status and errors.
func (r HealthResult) Summary() string {
	if f := r.Failed(); f != nil {
		s := fmt.Sprintf("health check %s FAILED (%s)", f.Name, f.Why)
		if f.Output != "" {
			s += ": " + lastLine(f.Output)
		}
		return s
	}
	if len(r.Checks) == 0 {
		return "no health checks (" + layout.HealthDir + " is empty)"
	}
	return fmt.Sprintf("%d health checks passed", len(r.Checks))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// ErrHealth is wrapped by a confirmation refused for a failed check.
var ErrHealth = errors.New("health check failed")

// runHealth runs the checks and records the result.
func (s *System) runHealth(st layout.State) (HealthResult, error) {
	res := HealthResult{Time: s.now().UTC(), Slot: st.Slot.Slot, Build: st.Slot.BuildID, Passed: true}
	dir := s.path("/" + layout.HealthDir)
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("health checks: %w", err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	timeout := s.HealthTimeout
	if timeout <= 0 {
		timeout = DefaultHealthTimeout
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 || strings.HasPrefix(e.Name(), ".") {
			continue // like run-parts: only executable files
		}
		c := runCheck(p, timeout)
		res.Checks = append(res.Checks, c)
		if !c.OK {
			res.Passed = false
			break // the first failure decides; the rest would only take time
		}
	}
	if err := writeHealth(s.path(layout.HealthFile), res); err != nil {
		return res, err
	}
	return res, nil
}

func runCheck(path string, timeout time.Duration) HealthCheck {
	c := HealthCheck{Name: filepath.Base(path)}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "OVROOT_HEALTH=1"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	c.DurationMS = time.Since(start).Milliseconds()
	c.Output = tail(out.String(), 2048)
	switch {
	case ctx.Err() != nil:
		c.Why = fmt.Sprintf("timed out after %s", timeout)
	case err != nil:
		c.Why = err.Error()
	default:
		c.OK = true
	}
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return strings.TrimRight(s, "\n")
}

func writeHealth(path string, r HealthResult) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadHealth reads the last health result of this boot (nil: none ran).
func (s *System) ReadHealth() (*HealthResult, error) {
	data, err := os.ReadFile(s.path(layout.HealthFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r HealthResult
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", layout.HealthFile, err)
	}
	return &r, nil
}
