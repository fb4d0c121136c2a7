package eshell

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		line string
		want []stage
		err  bool
	}{
		{"words", "ls -l /lib", []stage{{args: []string{"ls", "-l", "/lib"}}}, false},
		{"quotes", `cat 'a b' "c d"e`, []stage{{args: []string{"cat", "a b", "c de"}}}, false},
		{"pipe", "dmesg | cat", []stage{{args: []string{"dmesg"}}, {args: []string{"cat"}}}, false},
		{"redirect", "cat <in >out", []stage{{args: []string{"cat"}, in: "in", out: "out"}}, false},
		{"append", "cat a >> b", []stage{{args: []string{"cat", "a"}, out: "b", appendOut: true}}, false},
		{"empty", "   ", nil, false},
		{"unterminated", "cat 'a", nil, true},
		{"pipe at end", "ls |", nil, true},
		{"pipe at start", "| ls", nil, true},
		{"redirect without file", "ls >", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.line)
			if (err != nil) != tc.err {
				t.Fatalf("parse(%q) error = %v, want error %v", tc.line, err, tc.err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parse(%q) = %+v, want %+v", tc.line, got, tc.want)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	for name0, want := range map[string]bool{"/bin/sh": true, "ls": true, "/init": false, "init": false, "/bin/e2fsck": false} {
		if _, ok := Lookup(name0); ok != want {
			t.Errorf("Lookup(%q) = %v, want %v", name0, ok, want)
		}
	}
}
