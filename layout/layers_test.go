package layout

import (
	"strings"
	"testing"
)

func TestParseLayerTable(t *testing.T) {
	good := `{"layers":[{"name":"base"},{"name":"app","offset":0,"size":8192},{"name":"config","offset":8192,"size":4096}]}`
	if tb, err := ParseLayerTable([]byte(good)); err != nil || len(tb.Layers) != 3 {
		t.Fatalf("good table: %+v, %v", tb, err)
	}
	for _, c := range []struct{ table, want string }{
		{`{"layers":[{"name":"base"}]}`, "1 layers: want 2 to 16"},
		{`{"layers":[{"name":"base"},{"name":"base","size":4096}]}`, `layer "base" listed twice`},
		{`{"layers":[{"name":"base"},{"name":"../x","size":4096}]}`, `layer name "../x"`},
		{`{"layers":[{"name":"base","size":1},{"name":"app","size":4096}]}`, "the bottom layer"},
		{`{"layers":[{"name":"base"},{"name":"app","offset":0}]}`, `layer "app" has size 0`},
		{`{"layers":[{"name":"base"},{"name":"app","offset":100,"size":4096}]}`, "not 4096-aligned"},
		{`{"layers":[{"name":"base"},{"name":"app","size":8192},{"name":"c","offset":4096,"size":4096}]}`, "overlaps"},
		{`{"layers":[{"name":"base"},{"name":"app","offset":-4096,"size":4096}]}`, "overlaps"},
		{`{"layers":[{"name":"base"},{"name":"app","offset":4096,"size":9223372036854771712},{"name":"c","offset":8192,"size":4096}]}`, "past any disk"},
		{`not json`, "parse etc/ovroot/layers.json"},
	} {
		if _, err := ParseLayerTable([]byte(c.table)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.table, err, c.want)
		}
	}
}

// FuzzParseLayerTable: whatever the bottom layer holds, a table the
// parser accepts names mount points and byte ranges the init can use.
func FuzzParseLayerTable(f *testing.F) {
	f.Add([]byte(`{"layers":[{"name":"base"},{"name":"app","offset":0,"size":8192},{"name":"config","offset":8192,"size":4096}]}`))
	f.Add([]byte(`{"layers":[{"name":"base"},{"name":"app","offset":-4096,"size":4096}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := ParseLayerTable(data)
		if err != nil {
			return
		}
		end := int64(0)
		for i, l := range tb.Layers {
			if CheckLayerName(l.Name) != nil || strings.Contains(l.Name, "/") {
				t.Fatalf("accepted name %q", l.Name)
			}
			if i == 0 {
				continue
			}
			if l.Offset < end || l.Offset%LayerAlign != 0 || l.Size <= 0 {
				t.Fatalf("accepted layer %+v after byte %d", l, end)
			}
			end = l.Offset + l.Size
		}
	})
}
