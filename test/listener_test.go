package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy"
)

// assertClosedWithin reads c until the proxy closes it, failing if that
// takes longer than d (a read timeout) or if it sends more than a
// response's worth of bytes.
func assertClosedWithin(t *testing.T, c net.Conn, d time.Duration, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := io.Copy(io.Discard, c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) { // a reset: closed with our bytes unread
		t.Fatalf("%s: read after %d bytes = %v; want the proxy to close the connection within %v", what, n, err, d)
	}
}

// proxyV2 dials the proxy and sends a PROXY v2 header naming src as the
// client.
func proxyV2(t *testing.T, w *world, src string) *proxyConn {
	t.Helper()
	p := w.client(t, "")
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), p.RemoteAddr().(*net.TCPAddr))
	if _, err := h.WriteTo(p); err != nil {
		t.Fatalf("write PROXY header: %v", err)
	}
	return p
}

// TestFullPoolStill503: with the default connection caps, a CONNECT that
// finds the tunnel pool full still gets its 503 with Retry-After, not a
// closed connection: --max-conns sits above --max-tunnels.
func TestFullPoolStill503(t *testing.T) {
	w := newWorld(t, func(c *proxy.Config) { c.Limits.Global = 2 })
	target := w.ws.Listener.Addr().String()
	for i := range 2 {
		if resp, _, err := w.client(t, "").connect(target); err != nil || resp.StatusCode != 200 {
			t.Fatalf("tunnel %d: %v %v", i, resp, err)
		}
	}
	for i := range 3 {
		resp, body, err := w.client(t, "").connect(target)
		if err != nil {
			t.Fatalf("CONNECT to a full pool: %v; want 503", err)
		}
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "global") {
			t.Fatalf("CONNECT %d to a full pool = %d %q (Retry-After %q); want 503 naming the global limit with Retry-After", i, resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
	}
}

// TestMaxConns: connections count from accept, before any byte: silent
// ones fill the cap and the next is closed at once, counted under
// kind="conns"; closing one makes room again.
func TestMaxConns(t *testing.T) {
	w := newWorld(t, func(c *proxy.Config) {
		c.MaxConns, c.MaxConnsPerIP = 3, -1
		c.HeaderTimeout = 10 * time.Second // the silent conns must outlive the test
	})
	sc := newScraper(t, w)
	held := make([]*proxyConn, 3)
	for i := range held {
		held[i] = w.client(t, "")
	}
	eventually(t, 5*time.Second, "3 client conns counted", func() bool {
		return sc.value(t, "wsegress_client_conns") == 3
	})
	over := w.client(t, "")
	assertClosedWithin(t, over, 5*time.Second, "connection over --max-conns")
	if got := sc.value(t, `wsegress_limit_refusals_total{kind="conns"}`); got != 1 {
		t.Errorf(`wsegress_limit_refusals_total{kind="conns"} = %v; want 1`, got)
	}
	held[0].Close()
	eventually(t, 5*time.Second, "a slot back", func() bool {
		return sc.value(t, "wsegress_client_conns") == 2
	})
	target := w.ws.Listener.Addr().String()
	if resp, _, err := w.client(t, "").connect(target); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT after a conn closed: %v %v; want 200", resp, err)
	}
	eventually(t, 5*time.Second, "the refusal logged", func() bool {
		return strings.Contains(w.logs.String(), `msg="connection refused" kind=conns count=1 client=127.0.0.1:`)
	})

	// A reload raises the cap: the pool is full again (2 held, 1 tunnel)
	// and a fourth connection is served.
	if err := w.proxy.Reload(proxy.Config{Listen: "127.0.0.1:0", HeaderTimeout: 10 * time.Second, DialTimeout: 2 * time.Second,
		ACL: acl.Config{Rules: []acl.RuleSpec{allowRule(w.ws.Listener.Addr())}}, MaxConns: 4, MaxConnsPerIP: -1}); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if resp, _, err := w.client(t, "").connect(target); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT after the cap was raised: %v %v; want 200", resp, err)
	}
	assertClosedWithin(t, w.client(t, ""), 5*time.Second, "connection over the raised cap")
}

// TestMaxConnsAcrossListeners: a plain and a TLS (--tls-listen) listener
// share one --max-conns and one --max-conns-per-ip: connections on either
// count against both caps, and wsegress_client_conns counts each once.
func TestMaxConnsAcrossListeners(t *testing.T) {
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "ca")
	_, cert, key := ca.issue(t, t.TempDir(), "proxy", serverCert("127.0.0.1"))
	w := newWorld(t, func(c *proxy.Config) {
		c.MaxConns, c.MaxConnsPerIP = 4, 2
		c.HeaderTimeout = 10 * time.Second // the silent conns must outlive the test
		c.TLSCert, c.TLSKey, c.TLSListen = cert, key, tln.Addr().String()
	})
	served := make(chan error, 1)
	go func() { served <- w.proxy.ServeTLS(tln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		w.proxy.Shutdown(ctx)
		<-served
	})
	sc := newScraper(t, w)
	dialTLS := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", tln.Addr().String())
		if err != nil {
			skipOrFail(t, "dial from %s: %v", src, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	conns := func(want float64) {
		t.Helper()
		eventually(t, 5*time.Second, fmt.Sprintf("%v client conns counted", want), func() bool {
			return sc.value(t, "wsegress_client_conns") == want
		})
	}

	// 127.0.0.2 holds one conn on each listener: its per-IP cap is full
	// on both.
	w.client(t, "127.0.0.2")
	dialTLS("127.0.0.2")
	conns(2)
	assertClosedWithin(t, dialTLS("127.0.0.2"), 5*time.Second, "third conn of 127.0.0.2, on the TLS listener")
	assertClosedWithin(t, w.client(t, "127.0.0.2"), 5*time.Second, "third conn of 127.0.0.2, on the plain listener")

	// Two more clients fill --max-conns (4) across both listeners.
	w.client(t, "127.0.0.3")
	held := dialTLS("127.0.0.4")
	conns(4)
	assertClosedWithin(t, dialTLS("127.0.0.5"), 5*time.Second, "fifth conn, on the TLS listener")
	assertClosedWithin(t, w.client(t, "127.0.0.5"), 5*time.Second, "fifth conn, on the plain listener")
	m := sc.metrics(t)
	if got, want := m["wsegress_client_conns"], 4.0; got != want {
		t.Errorf("wsegress_client_conns = %v; want %v", got, want)
	}
	if c, ip := m[`wsegress_limit_refusals_total{kind="conns"}`], m[`wsegress_limit_refusals_total{kind="conns_per_ip"}`]; c != 2 || ip != 2 {
		t.Errorf("refusals: conns %v, conns_per_ip %v; want 2 and 2", c, ip)
	}

	// A conn closed on the TLS listener makes room for a tunnel through
	// TLS from 127.0.0.5.
	held.Close()
	conns(3)
	tc := tls.Client(dialTLS("127.0.0.5"), &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"})
	p := &proxyConn{Conn: tc, br: bufio.NewReader(tc)}
	p.SetDeadline(time.Now().Add(10 * time.Second))
	target := w.ws.Listener.Addr().String()
	if resp, _, err := p.connect(target); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT over TLS after a conn closed: %v %v; want 200", resp, err)
	}
	if err := p.wsEcho(target, "both"); err != nil {
		t.Fatalf("echo over TLS: %v", err)
	}
	conns(4)
}

// TestIPv6Slash64ViaProxyProtocol: behind a trusted balancer (PROXY v2
// from 127.0.0.1), two IPv6 clients of one /64 are one client for
// --max-tunnels-per-ip and --max-conns-per-ip, while another /64 is not;
// the canonical lines carry via and client_key.
func TestIPv6Slash64ViaProxyProtocol(t *testing.T) {
	w := newWorld(t, func(c *proxy.Config) {
		c.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.NoAuth = true // PROXY protocol clients are not local: explicit
		c.Limits.PerIP = 1
		c.MaxConnsPerIP = 2
	})
	sc := newScraper(t, w)
	target := w.ws.Listener.Addr().String()

	a := proxyV2(t, w, "[2001:db8:1:2::1]:40000")
	if resp, _, err := a.connect(target); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first client of the /64: %v %v; want 200", resp, err)
	}
	b := proxyV2(t, w, "[2001:db8:1:2:ffff::9]:40001")
	resp, body, err := b.connect(target)
	if err != nil || resp.StatusCode != 503 || !strings.Contains(body, "client_ip") {
		t.Fatalf("second address of the same /64: %v %q %v; want 503 naming client_ip", resp, body, err)
	}
	other := proxyV2(t, w, "[2001:db8:1:3::1]:40002")
	if resp, _, err := other.connect(target); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a client of another /64: %v %v; want 200", resp, err)
	}
	if err := a.wsEcho(target, "hi"); err != nil {
		t.Fatalf("echo through the PROXY-protocol tunnel: %v", err)
	}

	// a's tunnel and b's 503 (closed) leave a: the /64 holds 1 conn of 2.
	eventually(t, 5*time.Second, "b's conn released", func() bool {
		return sc.value(t, "wsegress_client_conns") == 2
	})
	c := proxyV2(t, w, "[2001:db8:1:2::3]:40003") // the /64's second conn
	d := proxyV2(t, w, "[2001:db8:1:2::4]:40004") // its third: over --max-conns-per-ip
	assertClosedWithin(t, d, 5*time.Second, "third conn of one /64")
	if got := sc.value(t, `wsegress_limit_refusals_total{kind="conns_per_ip"}`); got != 1 {
		t.Errorf(`wsegress_limit_refusals_total{kind="conns_per_ip"} = %v; want 1`, got)
	}
	c.Close()

	via := "via=" + a.LocalAddr().String()
	logs := w.logs.String()
	for _, want := range []string{
		`msg="request refused" client=[2001:db8:1:2:ffff::9]:40001 via=127.0.0.1:`,
		`client_key=2001:db8:1:2::/64`,
		`msg="connection refused" kind=conns_per_ip count=1 client=[2001:db8:1:2::4]:40004 via=127.0.0.1:`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	a.Close()
	eventually(t, 5*time.Second, "a's end line with via", func() bool {
		return strings.Contains(w.logs.String(), `msg="tunnel closed" client=[2001:db8:1:2::1]:40000 `+via+` client_key=2001:db8:1:2::/64`)
	})
}

// TestProxyProtocolRequired: a trusted source that sends no PROXY header
// is closed after the header timeout and counted; an untrusted source
// that sends one gets 400 (it is just a bad request there).
func TestProxyProtocolRequired(t *testing.T) {
	w := newWorld(t, func(c *proxy.Config) {
		c.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.NoAuth = true // PROXY protocol clients are not local: explicit
		c.HeaderTimeout = 300 * time.Millisecond
	})
	sc := newScraper(t, w)
	p := w.client(t, "")
	io.WriteString(p, "CONNECT "+w.ws.Listener.Addr().String()+" HTTP/1.1\r\n\r\n")
	assertClosedWithin(t, p, 5*time.Second, "trusted source without a PROXY header")
	if got := sc.value(t, `wsegress_requests_total{kind="proxy_protocol_refused"}`); got != 1 {
		t.Errorf(`wsegress_requests_total{kind="proxy_protocol_refused"} = %v; want 1`, got)
	}

	u := newWorld(t, nil) // trusts nobody
	q := u.client(t, "")
	h := proxyproto.HeaderProxyFromAddrs(1, &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 1}, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 2})
	h.WriteTo(q)
	io.WriteString(q, "CONNECT "+u.ws.Listener.Addr().String()+" HTTP/1.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(q), nil)
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("PROXY header from an untrusted source: %v %v; want 400", resp, err)
	}
}

// TestSlowAndIdleConnsClosed: a client that never finishes its headers,
// and one left idle after a 407, are both closed after --header-timeout.
func TestSlowAndIdleConnsClosed(t *testing.T) {
	checkNoLeaks(t)
	w := newWorld(t, chain(withUsers(t, "alice", "right"), func(c *proxy.Config) {
		c.HeaderTimeout = 300 * time.Millisecond
	}))
	target := w.ws.Listener.Addr().String()

	slow := w.client(t, "")
	io.WriteString(slow, "CONNECT "+target+" HTTP/1.1\r\nX-Slow: ")
	assertClosedWithin(t, slow, 5*time.Second, "slow headers")

	idle := w.client(t, "")
	resp, _, err := idle.connect(target)
	if err != nil || resp.StatusCode != 407 || resp.Close {
		t.Fatalf("CONNECT without credentials = %v %v; want a 407 that keeps the connection", resp, err)
	}
	start := time.Now()
	assertClosedWithin(t, idle, 5*time.Second, "idle after 407")
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("idle conn closed after %v; want it kept for --header-timeout (300ms)", took)
	}
}

// TestMetricsListenerHardened: the metrics listener closes a connection
// idle after its response and one that never sends a request, and holds
// at most 64 connections, 16 per client: the next is closed at once.
func TestMetricsListenerHardened(t *testing.T) {
	checkNoLeaks(t)
	for _, tc := range []struct {
		name          string
		headerTimeout time.Duration
	}{{"idle", 300 * time.Millisecond}, {"cap", 10 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, func(c *proxy.Config) { c.HeaderTimeout = tc.headerTimeout })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go w.proxy.ServeMetrics(ln)
			dialFrom := func(src string) net.Conn {
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				c, err := d.Dial("tcp", ln.Addr().String())
				if err != nil {
					skipOrFail(t, "dial from %s: %v", src, err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			dial := func() net.Conn { return dialFrom("127.0.0.1") }
			healthz := func(c net.Conn) error {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n"); err != nil {
					return err
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Close {
					return errors.New("want a keep-alive 200, got " + resp.Status)
				}
				return nil
			}
			if tc.name == "idle" {
				c := dial()
				if err := healthz(c); err != nil {
					t.Fatalf("/healthz: %v", err)
				}
				assertClosedWithin(t, c, 5*time.Second, "metrics conn idle after a response")
				assertClosedWithin(t, dial(), 5*time.Second, "metrics conn that sends nothing")
				return
			}
			// 16 per address (the per-IP cap) from 4 addresses: 64, the cap.
			held := make([]net.Conn, 0, 64)
			for i := range 64 {
				held = append(held, dialFrom(fmt.Sprintf("127.0.0.%d", 1+i/16)))
			}
			if err := healthz(held[63]); err != nil {
				t.Fatalf("/healthz on the 64th conn: %v", err)
			}
			for _, src := range []string{"127.0.0.5", "127.0.0.1"} { // over the cap; over the per-IP cap too
				over := dialFrom(src)
				io.WriteString(over, "GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n")
				assertClosedWithin(t, over, 5*time.Second, "metrics conn over the cap from "+src)
			}
			held[48].Close() // two of 127.0.0.4's: room for 127.0.0.5, and one more
			held[49].Close()
			eventuallyErr(t, 5*time.Second, func() error { return healthz(dialFrom("127.0.0.5")) })
			if err := healthz(dial()); err == nil {
				t.Errorf("a 17th conn from 127.0.0.1 was served with the total under the cap; want it closed by the per-IP cap")
			}
		})
	}
}
