package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy"
)

// scraper reads the proxy's /metrics, /healthz and /readyz over HTTP,
// without keep-alive so it leaves no connection (or fd) behind.
type scraper struct {
	base string
	hc   *http.Client
}

func newScraper(t *testing.T, w *world) *scraper {
	t.Helper()
	srv := httptest.NewServer(w.proxy.MetricsHandler())
	t.Cleanup(srv.Close)
	return &scraper{base: srv.URL, hc: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
}

// get fetches path and returns its status and body.
func (s *scraper) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := s.hc.Get(s.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// metrics scrapes /metrics into series (`name{label="v"}`) and values.
func (s *scraper) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	status, body := s.get(t, "/metrics")
	if status != 200 {
		t.Fatalf("/metrics = %d", status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// value is one series of a fresh scrape; a missing series fails the test.
func (s *scraper) value(t *testing.T, series string) float64 {
	t.Helper()
	v, ok := s.metrics(t)[series]
	if !ok {
		t.Fatalf("no series %s in /metrics", series)
	}
	return v
}

// TestMetricsCounters drives one request of each outcome and checks that
// every counter moved by exactly what was sent.
func TestMetricsCounters(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close() // nothing listens there: the dial is refused
	w := newWorld(t, chain(withUsers(t, "alice", "s3cret-alice"), func(c *proxy.Config) {
		c.Limits.Global = 1
		c.ACL.Rules = append(c.ACL.Rules, allowRule(closed.Addr()),
			acl.RuleSpec{Name: "no-blocked", Action: "deny", Target: "blocked.test"})
		c.Resolver = staticResolver(map[string][]string{"blocked.test": {"127.0.0.1"}})
	}))
	s := newScraper(t, w)
	before := s.metrics(t)
	target := w.ws.Listener.Addr().String()
	cred := basic("alice", "s3cret-alice")

	for _, tc := range []struct {
		target string
		header []string
		want   int
	}{
		{target, nil, 407},
		{target, []string{basic("alice", "wrong")}, 407},
		{"127.0.0.1:1", []string{cred}, 403},
		{"blocked.test:443", []string{cred}, 403},
		{closed.Addr().String(), []string{cred}, 502},
	} {
		if resp, body, err := w.client(t, "").connect(tc.target, tc.header...); err != nil || resp.StatusCode != tc.want {
			t.Fatalf("CONNECT %s = %v %q %v; want %d", tc.target, resp, body, err, tc.want)
		}
	}

	// One tunnel fills the pool of 1: the next is refused, /readyz fails.
	p := w.client(t, "")
	if resp, _, err := p.connect(target, cred); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT = %v %v; want 200", resp, err)
	}
	const msg = "count these bytes"
	if err := p.wsEcho(target, msg); err != nil {
		t.Fatal(err)
	}
	// Client bytes: the handshake and the masked frame; target bytes: at
	// least the 101 status line and the echoed frame.
	up := len(wsHandshake(target, "/echo")) + len(maskedFrame(msg))
	down := len("HTTP/1.1 101 Switching Protocols\r\n") + 2 + len(msg)
	if resp, body, err := w.client(t, "").connect(target, cred); err != nil || resp.StatusCode != 503 {
		t.Fatalf("CONNECT over the limit = %v %q %v; want 503", resp, body, err)
	}
	if code, body := s.get(t, "/readyz"); code != 503 || !strings.Contains(body, "full") {
		t.Errorf("/readyz with the pool full = %d %q; want 503", code, body)
	}
	eventually(t, 5*time.Second, "tunnels_open 1 and the bytes counted", func() bool {
		m := s.metrics(t)
		return m["wsegress_tunnels_open"] == 1 &&
			m[`wsegress_bytes_total{direction="up"}`]-before[`wsegress_bytes_total{direction="up"}`] >= float64(up) &&
			m[`wsegress_bytes_total{direction="down"}`]-before[`wsegress_bytes_total{direction="down"}`] >= float64(down)
	})
	p.Close()
	eventually(t, 5*time.Second, "tunnels_open back to 0", func() bool {
		return s.value(t, "wsegress_tunnels_open") == 0
	})

	after := s.metrics(t)
	for series, want := range map[string]float64{
		`wsegress_tunnels_total{result="ok"}`:                   1,
		`wsegress_tunnels_total{result="auth_failed"}`:          2,
		`wsegress_tunnels_total{result="denied"}`:               2,
		`wsegress_tunnels_total{result="limited"}`:              1,
		`wsegress_tunnels_total{result="dial_error"}`:           1,
		`wsegress_auth_failures_total{reason="missing"}`:        1,
		`wsegress_auth_failures_total{reason="invalid"}`:        1,
		`wsegress_acl_denials_total{rule="no-blocked"}`:         1,
		`wsegress_acl_denials_total{rule="builtin:non-public"}`: 1,
		`wsegress_limit_refusals_total{kind="global"}`:          1,
	} {
		if got := after[series] - before[series]; got != want {
			t.Errorf("%s moved by %v; want %v", series, got, want)
		}
	}
	for series, want := range map[string]float64{
		`wsegress_pool_slots_capacity{kind="global"}`: 1,
		`wsegress_pool_slots_in_use{kind="global"}`:   0,
		`wsegress_tunnels_open`:                       0,
	} {
		if got, ok := after[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v); want %v", series, got, ok, want)
		}
	}
	if code, body := s.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q; want 200", code, body)
	}
	if code, body := s.get(t, "/readyz"); code != 200 {
		t.Errorf("/readyz with a free slot = %d %q; want 200", code, body)
	}
}

// TestMetricsPipelinedBytes: bytes a client sends in the same write as
// its CONNECT are relayed bytes too, and count as such.
func TestMetricsPipelinedBytes(t *testing.T) {
	w := newWorld(t, nil)
	s := newScraper(t, w)
	target := w.ws.Listener.Addr().String()
	p := w.client(t, "")
	hs := wsHandshake(target, "/echo")
	resp, _, err := p.roundTrip("CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"+hs, http.MethodConnect)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pipelined CONNECT = %v %v", resp, err)
	}
	if resp, _, err := p.roundTrip("", http.MethodGet); err != nil || resp.StatusCode != 101 {
		t.Fatalf("pipelined handshake = %v %v", resp, err)
	}
	if err := p.echo("x"); err != nil {
		t.Fatal(err)
	}
	want := float64(len(hs) + len(maskedFrame("x")))
	eventuallyErr(t, 5*time.Second, func() error {
		if got := s.value(t, `wsegress_bytes_total{direction="up"}`); got < want {
			return fmt.Errorf(`wsegress_bytes_total{direction="up"} = %v; want >= %v (the handshake sent with the CONNECT plus one frame)`, got, want)
		}
		return nil
	})
}

// TestReadyzWhileDraining: /readyz turns 503 once Shutdown starts, while
// a tunnel keeps the proxy draining; /healthz stays 200.
func TestReadyzWhileDraining(t *testing.T) {
	ln, conns := rawTarget(t)
	w := newWorld(t, withAllow(ln.Addr()))
	s := newScraper(t, w)
	if code, body := s.get(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q; want 200", code, body)
	}
	c, _, tc := connectRaw(t, w, ln.Addr().String(), conns)
	// The 200 is written before the tunnel is tracked; wait for it, or
	// Shutdown could find no tunnel to wait for.
	eventually(t, 5*time.Second, "the tunnel tracked", func() bool { return w.proxy.OpenTunnels() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.proxy.Shutdown(ctx) }()
	eventually(t, 5*time.Second, "/readyz 503 while draining", func() bool {
		code, body := s.get(t, "/readyz")
		return code == 503 && strings.Contains(body, "draining")
	})
	if code, _ := s.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz while draining = %d; want 200", code)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a tunnel open", err)
	default:
	}
	c.Close()
	tc.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the tunnel closed")
	}
	if code, _ := s.get(t, "/readyz"); code != 503 {
		t.Errorf("/readyz after Shutdown = %d; want 503", code)
	}
}

// Raw proxy clients, shared by the auth, ACL, limit and metrics tests.

// proxyConn is a raw client connection to the proxy. It keeps its
// bufio.Reader across responses: bytes behind a 200 belong to the tunnel.
// Its methods return errors instead of failing the test, so goroutines may
// use them.
type proxyConn struct {
	net.Conn
	br *bufio.Reader
}

// openProxyConn dials the proxy from src ("" for the default source).
func openProxyConn(w *world, src string) (*proxyConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", w.proxyURL.Host)
	if err != nil {
		return nil, fmt.Errorf("dial proxy from %q: %w", src, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &proxyConn{Conn: c, br: bufio.NewReader(c)}, nil
}

// client is openProxyConn for the test goroutine; the test closes it.
func (w *world) client(t *testing.T, src string) *proxyConn {
	t.Helper()
	p, err := openProxyConn(w, src)
	if err != nil {
		if src != "" {
			skipOrFail(t, "second client address: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// skipOrFail skips when the machine cannot run a test, except under CI,
// where a missing prerequisite is a failure.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// connect sends CONNECT target with extra header lines ("Name: value") and
// reads the answer. The body is read unless it is a 2xx (tunnel bytes).
func (p *proxyConn) connect(target string, headers ...string) (*http.Response, string, error) {
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	return p.roundTrip(req+"\r\n", http.MethodConnect)
}

// roundTrip writes a raw request and reads one response to it.
func (p *proxyConn) roundTrip(req, method string) (*http.Response, string, error) {
	if _, err := io.WriteString(p, req); err != nil {
		return nil, "", fmt.Errorf("write %q: %w", firstLine(req), err)
	}
	resp, err := http.ReadResponse(p.br, &http.Request{Method: method})
	if err != nil {
		return nil, "", fmt.Errorf("read response to %q: %w", firstLine(req), err)
	}
	if resp.StatusCode/100 == 2 && method == http.MethodConnect || resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, "", nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

// wsEcho runs a WebSocket handshake with the echo target host through an
// open tunnel, then echoes msg (under 126 bytes).
func (p *proxyConn) wsEcho(host, msg string) error {
	resp, _, err := p.roundTrip(wsHandshake(host, "/echo"), http.MethodGet)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("handshake through tunnel: status %d; want 101", resp.StatusCode)
	}
	return p.echo(msg)
}

// echo sends one frame on an established WebSocket and reads it back.
func (p *proxyConn) echo(msg string) error {
	if _, err := p.Write(maskedFrame(msg)); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	h := make([]byte, 2)
	if _, err := io.ReadFull(p.br, h); err != nil {
		return fmt.Errorf("read frame header: %w", err)
	}
	got := make([]byte, h[1]&0x7f)
	if _, err := io.ReadFull(p.br, got); err != nil {
		return fmt.Errorf("read frame payload: %w", err)
	}
	if string(got) != msg {
		return fmt.Errorf("echo = %q; want %q", got, msg)
	}
	return nil
}
