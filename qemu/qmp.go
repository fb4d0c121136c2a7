package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// QMP is a connection to QEMU's machine protocol (docs/interop/qmp-spec).
type QMP struct {
	conn net.Conn
	r    *bufio.Reader
}

// DialQMP connects to the socket of Config.QMP, retrying while QEMU starts,
// and negotiates capabilities.
func DialQMP(path string, timeout time.Duration) (*QMP, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	var err error
	for {
		conn, err = net.Dial("unix", path)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("qmp: connect %s: %w", path, err)
	}
	q := &QMP{conn: conn, r: bufio.NewReader(conn)}
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := q.r.ReadBytes('\n'); err != nil { // the greeting
		conn.Close()
		return nil, fmt.Errorf("qmp: greeting: %w", err)
	}
	if _, err := q.Execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return q, nil
}

// Execute runs one command and returns its "return" value; events that
// arrive meanwhile are skipped.
func (q *QMP) Execute(command string, args any) (json.RawMessage, error) {
	msg := map[string]any{"execute": command}
	if args != nil {
		msg["arguments"] = args
	}
	b, _ := json.Marshal(msg)
	q.conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer q.conn.SetDeadline(time.Time{})
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class, Desc string
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w: %s", command, err, line)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		default:
			return resp.Return, nil
		}
	}
}

// KeyDown presses (down) or releases a key by QEMU's QKeyCode name
// ("f12", "esc", ...) on the guest's keyboard (input-send-event).
func (q *QMP) KeyDown(qcode string, down bool) error {
	_, err := q.Execute("input-send-event", map[string]any{
		"events": []any{map[string]any{
			"type": "key",
			"data": map[string]any{"down": down, "key": map[string]any{"type": "qcode", "data": qcode}},
		}},
	})
	return err
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }
