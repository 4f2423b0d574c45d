package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy/relay"
)

// maxResponseHead bounds a target's response headers to an upgrade.
const maxResponseHead = 64 << 10

// serveUpgrade forwards an absolute-form WebSocket upgrade
// (GET http://host/path or GET ws://host/path with Upgrade: websocket):
// it sends the request to the target as HTTP/1.1 in origin form with the
// hop-by-hop and Proxy-* headers removed, passes the target's 101 back
// byte for byte, and from then on relays verbatim, including frame bytes
// the client sent with its request and bytes the target sent behind its
// 101. A refusal from the target (any status but 101) is passed back with
// Connection: close.
func (s *Server) serveUpgrade(w http.ResponseWriter, q *request) {
	r := q.r
	if r.Method != http.MethodGet || r.ContentLength != 0 {
		s.refuse(w, q, fmt.Errorf("%w: an upgrade must be a GET without a body", errBadRequest))
		return
	}
	switch r.URL.Scheme {
	case "http", "ws":
	default:
		s.refuse(w, q, fmt.Errorf("%w: scheme %q cannot be upgraded in absolute form; use CONNECT", errBadRequest, r.URL.Scheme))
		return
	}
	t, ok := s.admit(w, q)
	if !ok {
		return
	}
	target, err := acl.ParseURLTarget(r.URL)
	if !t.reach(w, target, err) {
		return
	}
	would, refuse := q.checkRequest()
	if refuse {
		t.refuse(w, fmt.Errorf("%w: %s", errNotWebSocket, would))
		return
	}
	// Hijack before the exchange: bytes the client sent behind its request
	// headers (a first frame; the 8 key bytes of an old hixie-76
	// handshake, which the server needs before it answers) go to the
	// target right behind the request, as the client sent them.
	pipelined, ok := t.hijack(w)
	if !ok {
		return
	}
	headerTimeout := q.st.cfg.HeaderTimeout
	head, br, up, err := exchangeHead(t.target, r, q.target, pipelined, headerTimeout)
	if err == nil && statusOf(head) == 0 {
		err = fmt.Errorf("%w: not an HTTP response", errUpstream)
	}
	if err != nil {
		t.refuseRaw(err)
		return
	}
	status := statusOf(head)
	t.establish(status)
	if would != "" {
		t.wouldDeny(reportedCheck(would))
	}
	t.up = up
	if status != http.StatusSwitchingProtocols {
		// Bounded like the head: a target that stalls in its body must
		// not hold the tunnel (and a drain) forever.
		deadline := time.Now().Add(headerTimeout)
		t.target.SetReadDeadline(deadline)
		t.client.SetWriteDeadline(deadline)
		n, err := passRefusal(t.client, head, br, r)
		t.down = n
		t.close(relay.Result{Reason: endTargetRefused, Err: err})
		return
	}
	// The 101 goes back untouched, with any bytes the target sent right
	// behind it; from then on the relay moves everything.
	n, err := t.client.Write(head)
	t.down = int64(n)
	if err == nil {
		var m int64
		m, err = forwardBuffered(br, t.client)
		t.down += m
	}
	if err != nil {
		t.close(relay.Result{Reason: relay.EndError, Err: err})
		return
	}
	t.relay()
}

// exchangeHead writes the upgrade request and the client's pipelined bytes
// to the target and reads the raw bytes of its response head (status line
// and headers, through the blank line). The returned reader holds whatever
// the target sent after that; up counts the pipelined bytes.
func exchangeHead(target net.Conn, r *http.Request, t acl.Target, pipelined bufferedReader, timeout time.Duration) (head []byte, br *bufio.Reader, up int64, err error) {
	target.SetDeadline(time.Now().Add(timeout))
	defer target.SetDeadline(time.Time{})
	if _, err := target.Write(upgradeRequest(r, t)); err != nil {
		return nil, nil, 0, fmt.Errorf("write upgrade request: %w", err)
	}
	if up, err = forwardBuffered(pipelined, target); err != nil {
		return nil, nil, up, err
	}
	br = bufio.NewReaderSize(target, 4096)
	for {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if err != nil && err != bufio.ErrBufferFull {
			return nil, nil, up, fmt.Errorf("%w: read upgrade response: %w", errUpstream, err)
		}
		if len(head) > maxResponseHead {
			return nil, nil, up, fmt.Errorf("%w: response head over %d bytes", errUpstream, maxResponseHead)
		}
		if err == nil && (string(line) == "\r\n" || string(line) == "\n") && len(head) > len(line) {
			return head, br, up, nil
		}
	}
}

// statusOf returns the status code of a raw response head, or 0.
func statusOf(head []byte) int {
	line, _, _ := bytes.Cut(head, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") || len(f[1]) != 3 {
		return 0
	}
	code := 0
	for _, c := range f[1] {
		if c < '0' || c > '9' {
			return 0
		}
		code = code*10 + int(c-'0')
	}
	return code
}

// passRefusal relays a target's non-101 answer to the hijacked client,
// parsed so its body is framed correctly, and marked Connection: close.
func passRefusal(client net.Conn, head []byte, br *bufio.Reader, r *http.Request) (int64, error) {
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(head), br)), r)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errUpstream, err)
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	resp.Close = true
	cw := &writeCounter{w: client}
	err = resp.Write(cw)
	return cw.n, err
}

// writeCounter is an io.Writer that counts the bytes written through it.
type writeCounter struct {
	w io.Writer
	n int64
}

func (c *writeCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// upgradeRequest renders r for the target: origin-form request line,
// HTTP/1.1, Host from the URL, end-to-end headers as the client sent
// them, and Connection: Upgrade so the upgrade survives.
func upgradeRequest(r *http.Request, t acl.Target) []byte {
	var b bytes.Buffer
	b.Grow(512)
	b.WriteString("GET ")
	b.WriteString(r.URL.RequestURI())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(hostHeader(t, r.URL.Port() != ""))
	b.WriteString("\r\n")
	drop := connectionTokens(r.Header)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		if k == "Host" || k == "Connection" || (isHopHeader(k) && k != "Upgrade") || drop[strings.ToLower(k)] ||
			strings.HasPrefix(k, "Proxy-") {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("Connection: Upgrade\r\n\r\n")
	return b.Bytes()
}

// hostHeader is the Host header for t: the canonical (punycode) host the
// proxy dialed, with the port only if the client's URL had one.
func hostHeader(t acl.Target, withPort bool) string {
	if withPort {
		return t.String()
	}
	if strings.Contains(t.Host, ":") {
		return "[" + t.Host + "]"
	}
	return t.Host
}

// removeHopHeaders deletes the hop-by-hop headers of h, including those
// its Connection header names (RFC 9110 7.6.1), and every Proxy-* header.
func removeHopHeaders(h http.Header) {
	for tok := range connectionTokens(h) {
		h.Del(tok)
	}
	for k := range h {
		if isHopHeader(k) || strings.HasPrefix(k, "Proxy-") {
			delete(h, k)
		}
	}
}

// connectionTokens lists the headers named in Connection (they are
// hop-by-hop for this hop), except Upgrade which must reach the target.
func connectionTokens(h http.Header) map[string]bool {
	m := map[string]bool{}
	for _, v := range h.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.ToLower(strings.TrimSpace(tok))
			if tok != "" && tok != "upgrade" {
				m[tok] = true
			}
		}
	}
	return m
}

// isHopHeader reports the hop-by-hop headers of RFC 9110 7.6.1 and the
// proxy's own, which never travel past the proxy.
func isHopHeader(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}
