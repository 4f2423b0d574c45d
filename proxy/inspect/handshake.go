package inspect

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/wsegress/wsegress/acl"
)

// checkHandshake decides on a tunnel that does not start with TLS, in
// WebSocketOnly mode: it must start with a WebSocket handshake head.
func checkHandshake(b []byte, t acl.Target) Verdict {
	const get = "GET "
	if n := min(len(b), len(get)); string(b[:n]) != get[:n] {
		return refuse(NotWebSocket, "the tunnel starts with %q: neither TLS nor a WebSocket handshake (GET)", b[:min(len(b), 16)])
	}
	end := headEnd(b)
	if end < 0 {
		return need(len(b) + 1)
	}
	r, msg := parseHead(b[:end])
	if msg != "" {
		return refuse(NotWebSocket, "%s", msg)
	}
	return checkUpgrade(r, t)
}

// headEnd returns the length of the request head in b up to and without
// its final empty line, or -1 if b holds no empty line yet. A line ends at
// LF; parseHead then refuses one without CR, so a head with bare LFs is
// refused as soon as it ends instead of waiting for a CRLF CRLF that a
// client sending bare LFs never sends.
func headEnd(b []byte) int {
	end := -1
	if i := bytes.Index(b, []byte("\n\r\n")); i >= 0 {
		end = i + 1
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 && (end < 0 || i+1 < end) {
		end = i + 1
	}
	return end
}

// head is the part of a request the handshake check reads.
type head struct {
	method string
	proto  string // "HTTP/1.1"
	hosts  []string
	header http.Header // without Host
}

// parseHead parses a request head: the request line and header lines, each
// ending in CRLF (the last one included), without the final empty line. It is strict where leniency
// could make two parsers disagree (bare LF, obsolete line folding, space
// before the colon, control characters) and returns a message on error.
func parseHead(b []byte) (head, string) {
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			return head{}, "a line ends with a bare LF; HTTP lines end with CRLF"
		}
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return head{}, "a CR not followed by LF"
		}
	}
	lines := strings.Split(string(b[:len(b)-2]), "\r\n")
	method, rest, ok1 := strings.Cut(lines[0], " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	switch {
	case !ok1 || !ok2 || strings.Contains(proto, " "):
		return head{}, fmt.Sprintf("malformed request line %q", lines[0])
	case !strings.HasPrefix(target, "/") || strings.ContainsFunc(target, isCTL):
		return head{}, fmt.Sprintf("request target %q is not origin-form (/path)", target)
	}
	r := head{method: method, proto: proto, header: make(http.Header)}
	for _, l := range lines[1:] {
		if l != "" && (l[0] == ' ' || l[0] == '\t') {
			return head{}, "obsolete line folding (a header line starting with white space)"
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsFunc(name, func(c rune) bool { return !isTokenChar(c) }) {
			return head{}, fmt.Sprintf("malformed header line %q", l)
		}
		value = strings.Trim(value, " \t")
		if strings.ContainsFunc(value, func(c rune) bool { return c != '\t' && isCTL(c) }) {
			return head{}, fmt.Sprintf("control character in header %s", name)
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		if key == "Host" {
			r.hosts = append(r.hosts, value)
			continue
		}
		r.header[key] = append(r.header[key], value)
	}
	return r, ""
}

func isCTL(c rune) bool { return c < ' ' || c == 0x7f }

// isTokenChar reports whether c is a tchar of RFC 9110 5.6.2.
func isTokenChar(c rune) bool {
	return c < 0x7f && c > ' ' && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c)
}

// CheckRequest applies the handshake rules of Check to a request the proxy
// has parsed itself, such as an absolute-form GET ws://host/ with t its
// target: r.Host must name t.
func CheckRequest(r *http.Request, t acl.Target) Verdict {
	return checkUpgrade(head{method: r.Method, proto: r.Proto, header: r.Header, hosts: []string{r.Host}}, t)
}

// checkUpgrade applies RFC 6455 4.1 and the Host rule to a parsed head.
func checkUpgrade(r head, t acl.Target) Verdict {
	switch {
	case r.method != http.MethodGet:
		return refuse(NotWebSocket, "method %s; a WebSocket handshake is a GET", r.method)
	case r.proto != "HTTP/1.1":
		return refuse(NotWebSocket, "%s; a WebSocket handshake is HTTP/1.1", r.proto)
	case !hasToken(r.header.Values("Upgrade"), "websocket"):
		return refuse(NotWebSocket, "a GET without Upgrade: websocket")
	case !hasToken(r.header.Values("Connection"), "upgrade"):
		return refuse(NotWebSocket, "Connection does not contain upgrade")
	}
	if v := r.header.Values("Sec-Websocket-Version"); len(v) != 1 || v[0] != "13" {
		return refuse(NotWebSocket, "Sec-WebSocket-Version is %q; want exactly 13", v)
	}
	if k := r.header.Values("Sec-Websocket-Key"); len(k) != 1 || !validKey(k[0]) {
		return refuse(NotWebSocket, "Sec-WebSocket-Key must be one base64 nonce of 16 bytes, not %q", k)
	}
	if len(r.hosts) != 1 {
		return refuse(BadHost, "%d Host headers; a request has exactly one", len(r.hosts))
	}
	if ok, why := hostNames(r.hosts[0], t); !ok {
		return refuse(BadHost, "WebSocket handshake with Host %q for CONNECT %s: %s", r.hosts[0], t, why)
	}
	return Verdict{Result: PassWebSocket, Text: fmt.Sprintf("WebSocket handshake with Host %q naming the CONNECT target %s", r.hosts[0], t)}
}

// hasToken reports whether the comma-separated lists vs contain tok, ASCII
// case-insensitively.
func hasToken(vs []string, tok string) bool {
	for _, v := range vs {
		for _, e := range strings.Split(v, ",") {
			if asciiEqualFold(strings.Trim(e, " \t"), tok) {
				return true
			}
		}
	}
	return false
}

// validKey reports whether k is the base64 of 16 bytes (RFC 6455 4.1).
func validKey(k string) bool {
	b, err := base64.StdEncoding.DecodeString(k)
	return err == nil && len(b) == 16
}
