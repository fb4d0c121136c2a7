package slot

import (
	"strings"
	"testing"

	"github.com/ovroot/ovroot/layout"
)

func TestCheckVersion(t *testing.T) {
	for _, c := range []struct {
		name      string
		bundle    string
		p         Policy
		downgrade bool
		wantErr   string // "" = accepted
		wantWarn  string
	}{
		{"newer", "3", Policy{Highest: "2"}, false, "", ""},
		{"older than running", "1.9", Policy{UpdatePolicy: layout.UpdatePolicy{Version: "2"}}, false, "the bundle's version 1.9 is older than the running root's version 2: refusing", ""},
		{"older than both", "1", Policy{UpdatePolicy: layout.UpdatePolicy{Version: "2"}, Highest: "3"}, false, "older than the running root's version 2 and than version 3, the highest", ""},
		{"same as running", "2", Policy{Highest: "2"}, false, "", ""},
		{"no record yet", "1", Policy{}, false, "", ""},
		{"older than highest", "1", Policy{Highest: "2"}, false, "older than version 2, the highest this device ever confirmed: refusing a downgrade", ""},
		{"downgrade allowed", "1", Policy{Highest: "2", UpdatePolicy: layout.UpdatePolicy{Version: "2", AllowDowngrade: true}}, true, "", "downgrading as asked (--allow-downgrade)"},
		{"downgrade not asked", "1", Policy{Highest: "2", UpdatePolicy: layout.UpdatePolicy{Version: "2", AllowDowngrade: true}}, false, "refusing a downgrade", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			warn, err := checkVersion(c.bundle, c.p, c.downgrade)
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("checkVersion = %v, want error %q", err, c.wantErr)
			}
			if !strings.Contains(warn, c.wantWarn) || (c.wantWarn == "" && warn != "") {
				t.Errorf("warning %q, want %q", warn, c.wantWarn)
			}
		})
	}
}
