package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// runCompare checks that the WebSocket handshake the target recorded for a
// case (hs-ID.raw) is the one the client put on the wire (found in the tap
// records). Through a CONNECT tunnel the bytes must be identical. In
// absolute form the proxy rewrites the request line to origin form and
// drops Proxy-Authorization and Proxy-Connection; every other header must
// arrive with the same value (names compared case-insensitively).
func runCompare(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	dir := fs.String("dir", "", "record directory (required)")
	id := fs.String("case", "", "case id (required)")
	want := fs.String("want", "", "expected proxy request form: tunnel or absolute (empty: either)")
	var expect, require multiFlag
	fs.Var(&expect, "expect", "`Name: value` the target must have received (repeatable)")
	fs.Var(&require, "require", "header `name` the target must have received (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *id == "" {
		return errors.New("compare: -dir and -case are required")
	}
	target, err := os.ReadFile(filepath.Join(*dir, "hs-"+caseID(*id)+".raw"))
	if err != nil {
		return fmt.Errorf("target handshake: %w", err)
	}
	sent, viaTunnel, err := findSent(*dir, *id)
	if err != nil {
		return err
	}
	form := "absolute"
	if viaTunnel {
		form = "tunnel"
	}
	if *want != "" && *want != form {
		return fmt.Errorf("client used %s form for ws://, want %s", form, *want)
	}

	tgt, err := parseHead(target)
	if err != nil {
		return fmt.Errorf("target handshake: %w", err)
	}
	var problems []string
	for _, h := range tgt.headers {
		if strings.EqualFold(h.name, "Proxy-Authorization") {
			problems = append(problems, "target received Proxy-Authorization")
		}
	}
	for _, e := range expect {
		name, value, _ := strings.Cut(e, ":")
		value = strings.TrimSpace(value)
		if got := tgt.values(name); len(got) != 1 || got[0] != value {
			problems = append(problems, fmt.Sprintf("target %s = %q; want %q", name, got, value))
		}
	}
	for _, name := range require {
		if len(tgt.values(name)) == 0 {
			problems = append(problems, fmt.Sprintf("target did not receive %s", name))
		}
	}

	if viaTunnel {
		if !bytes.Equal(sent, target) {
			problems = append(problems, "tunnelled handshake differs: "+diffHeads(sent, target))
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s", strings.Join(problems, "; "))
		}
		fmt.Fprintf(out, "tunnel: %d handshake bytes identical (%s)\n", len(target), tgt.names())
		return nil
	}
	if d := diffHeads(sent, target); d != "" {
		problems = append(problems, d)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	fmt.Fprintf(out, "absolute-form: request line rewritten to %q, Proxy-Authorization dropped, %d headers identical (%s)\n",
		tgt.line, len(tgt.headers), tgt.names())
	return nil
}

var tapName = regexp.MustCompile(`^tap-(\d+)\.raw$`)

// findSent returns the last handshake for case id that a client sent
// through the tap, and whether it went inside a CONNECT tunnel. The last
// one is the one that got through: an attempt answered 407 comes first.
func findSent(dir, id string) ([]byte, bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, false, fmt.Errorf("read records: %w", err)
	}
	type tapFile struct {
		n    int
		path string
	}
	var taps []tapFile
	for _, e := range ents {
		if m := tapName.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[1])
			taps = append(taps, tapFile{n, filepath.Join(dir, e.Name())})
		}
	}
	sort.Slice(taps, func(i, j int) bool { return taps[i].n < taps[j].n })
	marker := "case=" + id
	var found []byte
	var foundTunnel bool
	for _, t := range taps {
		data, err := os.ReadFile(t.path)
		if err != nil {
			return nil, false, fmt.Errorf("read tap record: %w", err)
		}
		tunnel := false
		for len(data) > 0 && startsWithMethod(data) {
			end := bytes.Index(data, []byte("\r\n\r\n"))
			if end < 0 {
				break
			}
			head := data[:end+4]
			data = data[end+4:]
			line, _, _ := bytes.Cut(head, []byte("\r\n"))
			if bytes.HasPrefix(line, []byte("CONNECT ")) {
				tunnel = true
				continue
			}
			if bytes.Contains(line, []byte(marker)) {
				found, foundTunnel = head, tunnel
			}
		}
	}
	if found == nil {
		return nil, false, fmt.Errorf("no handshake for case %s in the tap records", id)
	}
	return found, foundTunnel, nil
}

// startsWithMethod reports whether b starts like a request line rather
// than with WebSocket frames or TLS records.
func startsWithMethod(b []byte) bool {
	for i, c := range b {
		if c == ' ' {
			return i > 0
		}
		if c < 'A' || c > 'Z' || i > 16 {
			return false
		}
	}
	return false
}

type header struct{ name, value string }

type head struct {
	line    string
	method  string
	uri     string // origin form, also for an absolute-form request line
	proto   string
	headers []header
}

func (h *head) values(name string) []string {
	var vs []string
	for _, f := range h.headers {
		if strings.EqualFold(f.name, name) {
			vs = append(vs, f.value)
		}
	}
	return vs
}

func (h *head) names() string {
	var ns []string
	for _, f := range h.headers {
		ns = append(ns, f.name)
	}
	return strings.Join(ns, ", ")
}

// parseHead splits a request head into its request line and headers,
// keeping names and values as sent (values without surrounding spaces).
func parseHead(b []byte) (*head, error) {
	lines := strings.Split(strings.TrimSuffix(string(b), "\r\n\r\n"), "\r\n")
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 {
		return nil, fmt.Errorf("malformed request line %q", lines[0])
	}
	h := &head{line: lines[0], method: parts[0], uri: parts[1], proto: parts[2]}
	if u, err := url.Parse(parts[1]); err == nil && u.IsAbs() {
		h.uri = u.RequestURI()
	}
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("malformed header line %q", l)
		}
		h.headers = append(h.headers, header{name, strings.Trim(value, " \t")})
	}
	return h, nil
}

// diffHeads compares what the client sent with what the target received,
// header by header, ignoring what a proxy must consume in absolute form.
// It returns "" when they match.
func diffHeads(sent, target []byte) string {
	s, err := parseHead(sent)
	if err != nil {
		return "client handshake: " + err.Error()
	}
	t, err := parseHead(target)
	if err != nil {
		return "target handshake: " + err.Error()
	}
	var d []string
	if s.method != t.method || s.uri != t.uri || s.proto != t.proto {
		d = append(d, fmt.Sprintf("request line %q arrived as %q", s.line, t.line))
	}
	key := func(hs []header, drop bool) []string {
		var ks []string
		for _, h := range hs {
			n := strings.ToLower(h.name)
			if drop && (n == "proxy-authorization" || n == "proxy-connection") {
				continue
			}
			v := h.value
			if n == "proxy-authorization" {
				v = "[redacted]" // a leaked credential is reported, never printed
			}
			ks = append(ks, n+": "+v)
		}
		sort.Stable(sort.StringSlice(ks))
		return ks
	}
	sk, tk := key(s.headers, true), key(t.headers, false)
	missing, extra := setDiff(sk, tk), setDiff(tk, sk)
	if len(missing) > 0 {
		d = append(d, fmt.Sprintf("sent but not received: %q", missing))
	}
	if len(extra) > 0 {
		d = append(d, fmt.Sprintf("received but not sent: %q", extra))
	}
	return strings.Join(d, "; ")
}

// setDiff returns the entries of a (a multiset) that b lacks.
func setDiff(a, b []string) []string {
	left := map[string]int{}
	for _, x := range b {
		left[x]++
	}
	var out []string
	for _, x := range a {
		if left[x] > 0 {
			left[x]--
			continue
		}
		out = append(out, x)
	}
	return out
}
