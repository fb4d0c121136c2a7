package qemu

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMPServer answers like QEMU: a greeting, then one reply per command,
// with an event in between to be skipped.
func fakeQMPServer(t *testing.T, sock string, got chan<- string) {
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			got <- strings.TrimSpace(string(line))
			var msg struct{ Execute string }
			json.Unmarshal(line, &msg)
			c.Write([]byte(`{"event": "RESUME", "timestamp": {}}` + "\n"))
			if msg.Execute == "bad" {
				c.Write([]byte(`{"error": {"class": "CommandNotFound", "desc": "The command bad has not been found"}}` + "\n"))
				continue
			}
			c.Write([]byte(`{"return": {}}` + "\n"))
		}
	}()
}

func TestQMP(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "q.sock")
	got := make(chan string, 10)
	// The socket appears a little after the dial starts, as with QEMU.
	go func() { time.Sleep(200 * time.Millisecond); fakeQMPServer(t, sock, got) }()
	q, err := DialQMP(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if c := <-got; c != `{"execute":"qmp_capabilities"}` {
		t.Errorf("first command %s", c)
	}
	if err := q.KeyDown("f12", true); err != nil {
		t.Fatal(err)
	}
	want := `{"arguments":{"events":[{"data":{"down":true,"key":{"data":"f12","type":"qcode"}},"type":"key"}]},"execute":"input-send-event"}`
	if c := <-got; c != want {
		t.Errorf("key event:\n got %s\nwant %s", c, want)
	}
	if _, err := q.Execute("bad", nil); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("error reply: %v", err)
	}
	if _, err := DialQMP(filepath.Join(t.TempDir(), "none.sock"), 300*time.Millisecond); err == nil {
		t.Error("dial of a missing socket succeeded")
	}
}
