package slot

import (
	"bytes"
	"encoding/json"

	"github.com/ovroot/ovroot/layout"
)

// ParseEvents reads the slot log's JSON lines. A line that does not parse
// (one torn by a power cut), or that names no slot or no event, is
// skipped: the log explains, it never decides a boot.
func ParseEvents(data []byte) []layout.SlotEvent {
	var out []layout.SlotEvent
	for _, line := range bytes.Split(data, []byte("\n")) {
		var ev layout.SlotEvent
		if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &ev) != nil || !ev.Slot.Valid() || ev.Event == "" {
			continue
		}
		out = append(out, ev)
	}
	return out
}
