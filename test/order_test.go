package test

import (
	"strings"
	"testing"
)

// TestOrderOfChecks: CONNECT, upgrades and plain-HTTP forwarding check a
// request in one order (README "How a request goes"): method and form
// first, then the pending gate, then credentials, then the target. So a
// request that is malformed for its path gets its 400/501 without
// credentials, and a bad target is only looked at once the client is
// authenticated.
func TestOrderOfChecks(t *testing.T) {
	checkNoLeaks(t)
	w := newWorld(t, withUsers(t, "alice", "s3cret-alice"))
	ws := w.ws.Listener.Addr().String()
	creds := basic("alice", "s3cret-alice") + "\r\n"
	for _, tc := range []struct {
		name string
		req  string
		want int
	}{
		{"forward: method before auth", "TRACE http://" + ws + "/ HTTP/1.1\r\nHost: " + ws + "\r\n\r\n", 501},
		{"forward: ws scheme without upgrade before auth", "GET ws://" + ws + "/ HTTP/1.1\r\nHost: " + ws + "\r\n\r\n", 400},
		{"upgrade: method before auth", "POST http://" + ws + "/ HTTP/1.1\r\nHost: " + ws +
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n", 400},
		{"upgrade: scheme before auth", "GET https://" + ws + "/ HTTP/1.1\r\nHost: " + ws +
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400},
		{"connect: body before auth", "CONNECT " + ws + " HTTP/1.1\r\nHost: " + ws + "\r\nContent-Length: 2\r\n\r\nhi", 400},
		{"connect: auth before target", "CONNECT 127.1:443 HTTP/1.1\r\nHost: 127.1:443\r\n\r\n", 407},
		{"connect: target after auth", "CONNECT 127.1:443 HTTP/1.1\r\nHost: 127.1:443\r\n" + creds + "\r\n", 400},
		{"upgrade: auth before target", "GET http://127.1:80/ HTTP/1.1\r\nHost: 127.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 407},
		{"forward: auth before target", "GET http://127.1:80/ HTTP/1.1\r\nHost: 127.1\r\n\r\n", 407},
		{"forward: target after auth", "GET http://127.1:80/ HTTP/1.1\r\nHost: 127.1\r\n" + creds + "\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, c, _ := w.rawRequest(tc.req)
			c.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s = %d %q; want %d", firstLine(tc.req), resp.StatusCode, strings.TrimSpace(body), tc.want)
			}
		})
	}
}
