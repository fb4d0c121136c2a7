package config

import (
	"bufio"
	"fmt"
	"strings"
)

// Error is what every parse and validation failure returns.
type Error struct {
	File string // as given, e.g. "image.toml"
	Line int    // 1-based; 0 when there is no line (a missing key)
	Key  string // dotted key, e.g. "init.device_timeout"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// keyLines maps each dotted key defined in a TOML document to the line that
// defines it. BurntSushi/toml reports positions only for syntax errors, so
// value errors find their line here. It understands [tables], dotted and
// quoted keys, comments, and skips the inside of multi-line strings and
// arrays, so text that looks like `key =` inside a value is not a key.
func keyLines(src string) map[string]int {
	lines := map[string]int{}
	table := ""
	inMulti := "" // the closing delimiter of a multi-line string we are in
	depth := 0    // open brackets of a multi-line array or inline table
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if inMulti != "" {
			if strings.Contains(line, inMulti) {
				inMulti = ""
			}
			continue
		}
		if depth > 0 {
			depth += bracketDelta(line)
			continue
		}
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' {
			continue
		}
		if strings.HasPrefix(t, "[") {
			end := strings.Index(t, "]")
			if end < 0 {
				continue
			}
			table = normKey(strings.Trim(t[:end], "[]"))
			lines[table] = n
			continue
		}
		k, v, ok := splitKeyValue(t)
		if !ok {
			continue
		}
		key := normKey(k)
		if table != "" {
			key = table + "." + key
		}
		if _, dup := lines[key]; !dup {
			lines[key] = n
		}
		v = strings.TrimSpace(v)
		switch {
		case strings.HasPrefix(v, `"""`) && strings.Count(v, `"""`) == 1:
			inMulti = `"""`
		case strings.HasPrefix(v, "'''") && strings.Count(v, "'''") == 1:
			inMulti = "'''"
		case strings.HasPrefix(v, "[") || strings.HasPrefix(v, "{"):
			depth = bracketDelta(v)
			if strings.HasPrefix(v, "{") {
				// One level of inline table: record its keys on this line.
				for _, part := range strings.Split(strings.Trim(v, "{} "), ",") {
					if ik, _, ok := splitKeyValue(strings.TrimSpace(part)); ok {
						lines[key+"."+normKey(ik)] = n
					}
				}
			}
		}
	}
	return lines
}

// splitKeyValue splits `key = value` at the first '=' outside quotes.
func splitKeyValue(s string) (string, string, bool) {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return strings.TrimSpace(s[:i]), s[i+1:], true
		}
	}
	return "", "", false
}

// normKey turns `a . "b c"` into `a.b c`.
func normKey(k string) string {
	var parts []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	parts = append(parts, strings.TrimSpace(cur.String()))
	return strings.Join(parts, ".")
}

// bracketDelta counts [ and { minus ] and } outside strings and comments.
func bracketDelta(s string) int {
	d := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#':
			return d
		case c == '[' || c == '{':
			d++
		case c == ']' || c == '}':
			d--
		}
	}
	return d
}

// closest returns the known key nearest to k by edit distance, if near.
func closest(k string, known []string) string {
	best, bestD := "", 4
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
