package slot

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// A small interpreter of the U-Boot shell (hush) commands boot.scr uses,
// so the tests run boot.scr's own logic against a boot partition's files,
// not only the Go that writes it. It knows exactly the subset BootScript
// emits and fails the test on anything else, so a script line it does not
// understand can never be skipped silently. Semantics follow U-Boot
// 2023.01: variables expand when a command runs (unquoted expansions split
// into words, as in `for s in ${list}`); itest and setexpr read numbers as
// hex (0x optional) and setexpr writes hex without 0x; `setenv NAME` with
// no value deletes NAME; `env import -t` adds NAME=VALUE lines to the
// environment (keeping what is there) and deletes NAME for a line `NAME`
// or `NAME=` (lib/hashtable.c himport_r).

// hushBoot is what a run of the script ended in.
type hushBoot struct {
	Slot     string // the slot whose kernel the boot command started ("" = none)
	Bootargs string
	Echo     []string // what the script printed
	Exited   bool     // `exit`: U-Boot goes on to its next boot target
}

type hush struct {
	t     *testing.T
	env   map[string]string
	files map[string][]byte // the boot partition, by path
	mem   map[string][]byte // load addresses
	// fatwriteFails makes every fatwrite fail (a write-protected card).
	fatwriteFails bool
	steps         int
	out           hushBoot
	done          bool
}

type hushWord struct{ parts []hushPart }
type hushPart struct {
	text   string
	quoted bool
}

// hushCmd is one simple command: its words, or a compound.
type hushNode interface{}
type hushSimple struct {
	words []hushWord
	line  string
}
type hushAndOr struct {
	cmds []hushSimple
	ops  []string // "&&" or "||" between cmds
}
type hushIf struct {
	conds  []hushAndOr
	bodies [][]hushNode // one per cond, plus else when len = len(conds)+1
}
type hushFor struct {
	name  string
	words []hushWord
	body  []hushNode
}

// hushLex splits the script into segments (commands separated by ';' or
// newlines, outside quotes), each a list of words; && and || are words.
func hushLex(t *testing.T, script string) [][]hushWord {
	var segs [][]hushWord
	var seg []hushWord
	var w *hushWord
	endWord := func() {
		if w != nil {
			seg = append(seg, *w)
			w = nil
		}
	}
	endSeg := func() {
		endWord()
		if len(seg) > 0 {
			segs = append(segs, seg)
		}
		seg = nil
	}
	add := func(s string, quoted bool) {
		if w == nil {
			w = &hushWord{}
		}
		w.parts = append(w.parts, hushPart{s, quoted})
	}
	for i := 0; i < len(script); i++ {
		c := script[i]
		switch {
		case c == '#' && w == nil:
			for i < len(script) && script[i] != '\n' {
				i++
			}
			endSeg()
		case c == '\n' || c == ';':
			endSeg()
		case c == ' ' || c == '\t':
			endWord()
		case c == '"':
			j := strings.IndexByte(script[i+1:], '"')
			if j < 0 {
				t.Fatalf("hush: unterminated quote at byte %d", i)
			}
			add(script[i+1:i+1+j], true)
			if w == nil {
				w = &hushWord{}
			}
			i += j + 1
		case c == '\'' || c == '\\' || c == '`':
			t.Fatalf("hush: this interpreter does not know %q (byte %d)", c, i)
		default:
			j := i
			for j < len(script) && !strings.ContainsRune(" \t\n;\"", rune(script[j])) {
				j++
			}
			add(script[i:j], false)
			i = j - 1
		}
	}
	endSeg()
	return segs
}

func (w hushWord) literal() string {
	var b strings.Builder
	for _, p := range w.parts {
		b.WriteString(p.text)
	}
	return b.String()
}

// hushParser turns segments into nodes.
type hushParser struct {
	t    *testing.T
	segs [][]hushWord
	pos  int
	// rest is what followed a keyword in the current segment
	// ("then setenv x 1"): taken before the next segment.
	rest []hushWord
}

func (p *hushParser) next() ([]hushWord, bool) {
	if p.rest != nil {
		r := p.rest
		p.rest = nil
		return r, true
	}
	if p.pos >= len(p.segs) {
		return nil, false
	}
	p.pos++
	return p.segs[p.pos-1], true
}

func (p *hushParser) unread(seg []hushWord) { p.rest = seg }

// block parses commands until one of the end keywords, which it returns.
func (p *hushParser) block(ends ...string) ([]hushNode, string) {
	var nodes []hushNode
	for {
		seg, ok := p.next()
		if !ok {
			if len(ends) > 0 {
				p.t.Fatalf("hush: script ends before %v", ends)
			}
			return nodes, ""
		}
		kw := seg[0].literal()
		for _, e := range ends {
			if kw == e {
				if len(seg) > 1 {
					p.unread(seg[1:])
				}
				return nodes, kw
			}
		}
		switch kw {
		case "if":
			nodes = append(nodes, p.parseIf(seg[1:]))
		case "for":
			nodes = append(nodes, p.parseFor(seg[1:]))
		case "then", "else", "elif", "fi", "do", "done", "in":
			p.t.Fatalf("hush: unexpected %q (want one of %v)", kw, ends)
		default:
			nodes = append(nodes, p.andOr(seg))
		}
	}
}

func (p *hushParser) andOr(seg []hushWord) hushAndOr {
	var a hushAndOr
	cur := hushSimple{}
	for _, w := range seg {
		if l := w.literal(); (l == "&&" || l == "||") && len(w.parts) == 1 && !w.parts[0].quoted {
			a.cmds, a.ops = append(a.cmds, cur), append(a.ops, l)
			cur = hushSimple{}
			continue
		}
		cur.words = append(cur.words, w)
	}
	if len(cur.words) == 0 {
		p.t.Fatalf("hush: empty command in %v", seg)
	}
	return hushAndOr{cmds: append(a.cmds, cur), ops: a.ops}
}

func (p *hushParser) parseIf(cond []hushWord) hushIf {
	n := hushIf{conds: []hushAndOr{p.andOr(cond)}}
	for {
		if _, kw := p.block("then"); kw != "then" {
			p.t.Fatal("hush: if without then")
		}
		body, kw := p.block("elif", "else", "fi")
		n.bodies = append(n.bodies, body)
		switch kw {
		case "fi":
			return n
		case "else":
			body, kw := p.block("fi")
			if kw != "fi" {
				p.t.Fatal("hush: else without fi")
			}
			n.bodies = append(n.bodies, body)
			return n
		case "elif":
			seg, _ := p.next()
			n.conds = append(n.conds, p.andOr(seg))
		}
	}
}

func (p *hushParser) parseFor(head []hushWord) hushFor {
	if len(head) < 2 || head[1].literal() != "in" {
		p.t.Fatalf("hush: for without in")
	}
	n := hushFor{name: head[0].literal(), words: head[2:]}
	if _, kw := p.block("do"); kw != "do" {
		p.t.Fatal("hush: for without do")
	}
	body, kw := p.block("done")
	if kw != "done" {
		p.t.Fatal("hush: for without done")
	}
	n.body = body
	return n
}

// runHush runs script against files with the environment U-Boot's distro
// boot sets for a script on mmc 0:1.
func runHush(t *testing.T, script string, files map[string][]byte, fatwriteFails bool) (hushBoot, map[string][]byte) {
	t.Helper()
	p := &hushParser{t: t, segs: hushLex(t, script)}
	nodes, _ := p.block()
	h := &hush{t: t, files: files, mem: map[string][]byte{}, fatwriteFails: fatwriteFails, env: map[string]string{
		"devtype": "mmc", "devnum": "0", "distro_bootpart": "1",
		"kernel_addr_r": "0x40400000", "ramdisk_addr_r": "0x44000000", "fdtcontroladdr": "0x7f000000",
	}}
	h.run(nodes)
	return h.out, h.files
}

func (h *hush) run(nodes []hushNode) {
	for _, n := range nodes {
		if h.done {
			return
		}
		if h.steps++; h.steps > 100000 {
			h.t.Fatal("hush: the script runs forever")
		}
		switch n := n.(type) {
		case hushAndOr:
			h.andOr(n)
		case hushIf:
			taken := false
			for i, c := range n.conds {
				if h.andOr(c) {
					h.run(n.bodies[i])
					taken = true
					break
				}
				if h.done {
					return
				}
			}
			if !taken && len(n.bodies) > len(n.conds) {
				h.run(n.bodies[len(n.conds)])
			}
		case hushFor:
			for _, v := range h.expand(n.words) {
				h.env[n.name] = v
				h.run(n.body)
				if h.done {
					return
				}
			}
		default:
			h.t.Fatalf("hush: node %T", n)
		}
	}
}

func (h *hush) andOr(a hushAndOr) bool {
	ok := h.simple(a.cmds[0])
	for i, op := range a.ops {
		if h.done {
			return false
		}
		if (op == "&&" && ok) || (op == "||" && !ok) {
			ok = h.simple(a.cmds[i+1])
		}
	}
	return ok
}

// expand expands ${name} in each word; unquoted expansions split into
// words, quoted ones do not.
func (h *hush) expand(words []hushWord) []string {
	var out []string
	for _, w := range words {
		var cur strings.Builder
		have := false
		for _, part := range w.parts {
			s := h.subst(part.text)
			if part.quoted || !strings.Contains(part.text, "$") {
				cur.WriteString(s)
				have = true
				continue
			}
			fields := strings.Fields(s)
			for i, f := range fields {
				if i > 0 {
					out = append(out, cur.String())
					cur.Reset()
				}
				cur.WriteString(f)
				have = true
			}
		}
		if have && (cur.Len() > 0 || len(w.parts) > 0 && w.parts[0].quoted) {
			out = append(out, cur.String())
		}
	}
	return out
}

func (h *hush) subst(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "$")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		if !strings.HasPrefix(s[i:], "${") {
			h.t.Fatalf("hush: only ${NAME} expansions are known: %q", s)
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			h.t.Fatalf("hush: unterminated ${ in %q", s)
		}
		b.WriteString(h.env[s[i+2:i+j]])
		s = s[i+j+1:]
	}
}

// hex reads a number as U-Boot's itest and setexpr do.
func hushHex(s string) uint64 {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	var n uint64
	for _, c := range s {
		d, err := strconv.ParseUint(string(c), 16, 8)
		if err != nil {
			break // simple_strtoul stops at the first non-digit
		}
		n = n*16 + d
	}
	return n
}

func (h *hush) file(dev, part, path string) string {
	if dev != "mmc" || part != "0:1" {
		h.t.Fatalf("hush: a command names device %s %s, not the boot partition mmc 0:1", dev, part)
	}
	return strings.TrimPrefix(path, "/")
}

func (h *hush) simple(c hushSimple) bool {
	args := h.expand(c.words)
	if len(args) == 0 {
		h.t.Fatalf("hush: empty command")
	}
	need := func(n int) {
		if len(args) != n {
			h.t.Fatalf("hush: %s takes %d arguments here, got %q", args[0], n-1, args)
		}
	}
	switch args[0] {
	case "setenv":
		if len(args) < 2 {
			h.t.Fatal("hush: setenv without a name")
		}
		if len(args) == 2 {
			delete(h.env, args[1])
		} else {
			h.env[args[1]] = strings.Join(args[2:], " ")
		}
		return true
	case "echo":
		h.out.Echo = append(h.out.Echo, strings.Join(args[1:], " "))
		return true
	case "exit":
		h.out.Exited, h.done = true, true
		return true
	case "test":
		switch {
		case len(args) == 5 && args[1] == "-e":
			_, ok := h.files[h.file(args[2], args[3], args[4])]
			return ok
		case len(args) == 3 && args[1] == "-z":
			return args[2] == ""
		case len(args) == 3 && args[1] == "-n":
			return args[2] != ""
		case len(args) == 4 && args[2] == "=":
			return args[1] == args[3]
		}
		h.t.Fatalf("hush: test %q is not known here", args[1:])
	case "itest":
		if len(args) < 4 {
			// An operand that expanded to nothing: U-Boot's itest prints
			// its usage and fails (CMD_RET_USAGE), so the condition is false.
			h.out.Echo = append(h.out.Echo, "itest: usage")
			return false
		}
		need(4)
		a, b := hushHex(args[1]), hushHex(args[3])
		switch args[2] {
		case "-lt":
			return a < b
		case "-le":
			return a <= b
		case "-gt":
			return a > b
		case "-ge":
			return a >= b
		case "-eq":
			return a == b
		case "-ne":
			return a != b
		}
		h.t.Fatalf("hush: itest %q", args[2])
	case "setexpr":
		need(5)
		if args[3] != "+" {
			h.t.Fatalf("hush: setexpr %q", args[3])
		}
		h.env[args[1]] = strconv.FormatUint(hushHex(args[2])+hushHex(args[4]), 16)
		return true
	case "load":
		need(5)
		data, ok := h.files[h.file(args[1], args[2], args[4])]
		if !ok {
			return false
		}
		h.mem[args[3]] = append([]byte(nil), data...)
		h.env["filesize"] = strconv.FormatInt(int64(len(data)), 16)
		return true
	case "env":
		if len(args) != 5 || args[1] != "import" || args[2] != "-t" {
			h.t.Fatalf("hush: env %q", args[1:])
		}
		data := h.mem[args[3]]
		if n := hushHex(args[4]); n < uint64(len(data)) {
			data = data[:n]
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimLeft(line, " \t")
			if line == "" || line[0] == '#' {
				continue
			}
			name, val, _ := strings.Cut(line, "=")
			if val == "" {
				delete(h.env, name) // "NAME" and "NAME=" delete
				continue
			}
			h.env[name] = val
		}
		return true
	case "mw.b":
		need(4)
		h.mem[args[1]] = []byte{byte(hushHex(args[2]))}
		return true
	case "fatwrite":
		need(6)
		if h.fatwriteFails {
			return false
		}
		n := hushHex(args[5])
		h.files[h.file(args[1], args[2], args[4])] = append([]byte(nil), h.mem[args[3]][:n]...)
		return true
	case "booti", "bootz":
		need(4)
		k, r := h.mem[args[1]], h.mem[strings.Split(args[2], ":")[0]]
		if !strings.HasPrefix(string(k), "kernel ") || !strings.HasPrefix(string(r), "initrd ") {
			return false // not a kernel: U-Boot's boot command returns
		}
		h.out.Slot = strings.TrimPrefix(string(k), "kernel ")
		if string(r) != "initrd "+h.out.Slot {
			h.t.Fatalf("hush: kernel of slot %s with the initramfs %q", h.out.Slot, r)
		}
		h.out.Bootargs = h.env["bootargs"]
		h.done = true
		return true
	}
	h.t.Fatalf("hush: command %q is not known to this interpreter (%s)", args[0], fmt.Sprint(args))
	return false
}
