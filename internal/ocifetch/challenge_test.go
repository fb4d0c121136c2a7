package ocifetch

import (
	"maps"
	"testing"
)

func TestParseChallenge(t *testing.T) {
	for _, tc := range []struct {
		in     string
		scheme string
		params map[string]string
	}{
		{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull,push"`, "Bearer",
			map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/x:pull,push"}},
		{`Basic realm="Registry"`, "Basic", map[string]string{"realm": "Registry"}},
		{`Bearer realm=https://x/token, service=reg`, "Bearer", map[string]string{"realm": "https://x/token", "service": "reg"}},
	} {
		s, p := parseChallenge(tc.in)
		if s != tc.scheme || !maps.Equal(p, tc.params) {
			t.Errorf("parseChallenge(%q) = %q, %v, want %q, %v", tc.in, s, p, tc.scheme, tc.params)
		}
	}
}
