package test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsegress/wsegress/proxy"
)

// TestReloadSettings: a Reload applies --max-auth-retries, --queue-timeout
// and --upstream to new requests, and logs one warning naming each
// setting it cannot change, which keeps its running value.
func TestReloadSettings(t *testing.T) {
	var cfg proxy.Config
	w := newWorld(t, chain(withUsers(t, "alice", "right"), func(c *proxy.Config) {
		c.Limits.Global = 1
		cfg = *c
	}))
	target := w.ws.Listener.Addr().String()
	cred := basic("alice", "right")

	next := cfg
	next.Listen = "127.0.0.1:1"
	next.MetricsListen = "127.0.0.1:2"
	next.HeaderTimeout = 7 * time.Second
	next.MaxAuthRetries = 1
	next.QueueTimeout = 10 * time.Second
	next.Upstream = &url.URL{Scheme: "http", Host: "127.0.0.1:1"} // nothing listens there
	if err := w.proxy.Reload(next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	logs := w.logs.String()
	for _, setting := range []string{"--listen", "--metrics-listen", "--header-timeout"} {
		if n := strings.Count(logs, "level=WARN msg=\"reload cannot change this setting: restart to apply it; the running value stays\" setting="+setting+"\n"); n != 1 {
			t.Errorf("warnings naming %s: %d; want 1", setting, n)
		}
	}
	if n := strings.Count(logs, "reload cannot change"); n != 3 {
		t.Errorf("reload warnings: %d; want 3 (listen, metrics-listen, header-timeout):\n%s", n, logs)
	}

	// --max-auth-retries 1: the first 407 closes the connection.
	resp, _, err := w.client(t, "").connect(target)
	if err != nil || resp.StatusCode != 407 || !resp.Close {
		t.Fatalf("CONNECT without credentials after reload = %v %v; want 407 with Connection: close", resp, err)
	}
	// --upstream: targets are now dialed through the (dead) parent.
	resp, _, err = w.client(t, "").connect(target, cred)
	if err != nil || resp.StatusCode != 502 {
		t.Fatalf("CONNECT via a dead upstream = %v %v; want 502", resp, err)
	}
	if !strings.Contains(w.logs.String(), "via upstream") {
		t.Errorf("no dial via upstream in the log")
	}
	next.Upstream = nil
	if err := w.proxy.Reload(next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	first := w.client(t, "")
	if resp, _, err := first.connect(target, cred); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT direct again = %v %v; want 200", resp, err)
	}
	// --queue-timeout: with the one slot taken, the next CONNECT waits for
	// it instead of getting 503 at once.
	second := w.client(t, "")
	done := make(chan error, 1)
	go func() {
		resp, _, err := second.connect(target, cred)
		if err == nil && resp.StatusCode != 200 {
			err = io.ErrUnexpectedEOF
			t.Errorf("queued CONNECT = %d; want 200 once the slot is free", resp.StatusCode)
		}
		done <- err
	}()
	eventually(t, 5*time.Second, "the second CONNECT queued", func() bool {
		return w.proxy.OpenTunnels() == 1 && strings.Contains(scrapeMetrics(t, w), `wsegress_queue_waiting{kind="global"} 1`)
	})
	first.Close()
	if err := <-done; err != nil {
		t.Fatalf("queued CONNECT: %v", err)
	}
}

// scrapeMetrics returns the text of one /metrics scrape.
func scrapeMetrics(t *testing.T, w *world) string {
	t.Helper()
	_, body := newScraper(t, w).get(t, "/metrics")
	return body
}

// TestForwardTimeouts: plain-HTTP forwarding gives up on a target that
// sends no response headers within --response-header-timeout (504), and
// on a request body that stalls for --body-timeout (408, closed).
func TestForwardTimeouts(t *testing.T) {
	checkNoLeaks(t)
	ln, conns := rawTarget(t) // accepts, reads, never answers
	go func() {
		for c := range conns {
			go io.Copy(io.Discard, c)
		}
	}()
	w := newWorld(t, chain(withAllow(ln.Addr()), func(c *proxy.Config) {
		c.ResponseHeaderTimeout = 300 * time.Millisecond
		c.BodyTimeout = 300 * time.Millisecond
	}))
	addr := ln.Addr().String()

	p := w.client(t, "")
	resp, _, err := p.roundTrip("GET http://"+addr+"/slow HTTP/1.1\r\nHost: "+addr+"\r\n\r\n", "GET")
	if err != nil || resp.StatusCode != 504 {
		t.Fatalf("GET to a target that never answers = %v %v; want 504", resp, err)
	}

	p = w.client(t, "")
	resp, body, err := p.roundTrip("POST http://"+addr+"/upload HTTP/1.1\r\nHost: "+addr+"\r\nContent-Length: 100\r\n\r\n0123456789", "POST")
	if err != nil || resp.StatusCode != 408 {
		t.Fatalf("POST whose body stalls = %v %q %v; want 408", resp, body, err)
	}
	assertClosedWithin(t, p, 5*time.Second, "connection after a stalled body")
	if !strings.Contains(w.logs.String(), "status=408") {
		t.Errorf("no canonical line with status=408")
	}

	// A body that keeps moving, more slowly than the timeout in all, is
	// not cut: the timeout is per stall, not per body.
	ok := newRecorderTarget(t)
	w2 := newWorld(t, chain(withAllow(ok.Addr()), func(c *proxy.Config) { c.BodyTimeout = 300 * time.Millisecond }))
	q := w2.client(t, "")
	io.WriteString(q, "POST http://"+ok.Addr().String()+"/up HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n")
	for i := range 6 {
		time.Sleep(100 * time.Millisecond) // the stall under test, not a wait for a condition
		io.WriteString(q, string(rune('a'+i)))
	}
	resp, body, err = q.roundTrip("", "POST")
	if err != nil || resp.StatusCode != 200 || body != "got 6" {
		t.Fatalf("slow but steady body = %v %q %v; want 200 \"got 6\"", resp, body, err)
	}
}

// newRecorderTarget is an HTTP target that answers "got N" with the size
// of the request body.
func newRecorderTarget(t *testing.T) net.Listener {
	t.Helper()
	ln, conns := rawTarget(t)
	go func() {
		for c := range conns {
			go func() {
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				n, _ := io.Copy(io.Discard, req.Body)
				body := "got " + strconv.FormatInt(n, 10)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
				c.Close()
			}()
		}
	}()
	return ln
}
