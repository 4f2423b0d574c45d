package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy"
)

// inspectWorld is a world with --websocket-only --sni-check (mode: enforce
// or report) and two names for 127.0.0.1: raw.test, a raw target that
// records what reaches it, and echo.test, the wss echo target.
type inspectWorld struct {
	*world
	raw   string // raw.test:port
	conns <-chan net.Conn
	echo  string // echo.test:port of the wss echo target
	ws    string // echo.test:port of the ws echo target
}

func newInspectWorld(t *testing.T, mutate func(*proxy.Config)) *inspectWorld {
	t.Helper()
	ln, conns := rawTarget(t)
	iw := &inspectWorld{conns: conns}
	iw.raw = fmt.Sprintf("raw.test:%d", ln.Addr().(*net.TCPAddr).Port)
	iw.world = newWorld(t, func(c *proxy.Config) {
		c.HeaderTimeout = 500 * time.Millisecond
		c.Resolver = staticResolver(map[string][]string{"raw.test": {"127.0.0.1"}, "echo.test": {"127.0.0.1"}})
		c.Inspect = proxy.Inspect{WebSocketOnly: true, SNICheck: true}
		c.ACL.Rules = append(c.ACL.Rules, allow(iw.raw))
		if mutate != nil {
			mutate(c)
		}
	})
	// The echo targets' ports are known only now; a reload adds their names.
	iw.echo = "echo.test:" + portOf(iw.wss.Listener.Addr())
	iw.ws = "echo.test:" + portOf(iw.world.ws.Listener.Addr())
	return iw
}

// allowEcho reloads cfg with rules for the echo targets' names.
func (iw *inspectWorld) allowEcho(t *testing.T, cfg proxy.Config) {
	t.Helper()
	cfg.ACL.Rules = append(cfg.ACL.Rules, allow(iw.echo), allow(iw.ws))
	if err := iw.proxy.Reload(cfg); err != nil {
		t.Fatal(err)
	}
}

func portOf(a net.Addr) string { return fmt.Sprint(a.(*net.TCPAddr).Port) }

// captureHello returns the first flight (one TLS record holding the
// ClientHello) crypto/tls sends with cfg.
func captureHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go tls.Client(a, cfg).Handshake() // fails once b is closed
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// attacks are first flights --websocket-only must refuse, with the reason
// word the log must give. Each is sent to raw.test after the 200.
func attacks(t *testing.T, rawHost string) []struct {
	name, reason string
	first        []byte
	slow         bool // sends part of a head, then waits: only the timeout ends it
} {
	random := make([]byte, 64)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(r.IntN(256))
	}
	random[0] = 0x01 // neither TLS (0x16) nor "GET "
	big := []byte("GET /echo HTTP/1.1\r\nHost: " + rawHost + "\r\nX-Pad: ")
	big = append(big, bytes.Repeat([]byte("a"), 16<<10+1-len(big))...)
	return []struct {
		name, reason string
		first        []byte
		slow         bool
	}{
		{name: "random TCP", reason: "not_websocket", first: random},
		{name: "handshake with a wrong Host", reason: "bad_host", first: []byte(wsHandshake("other.test:80", "/echo"))},
		{name: "fronted SNI", reason: "sni_mismatch", first: captureHello(t, &tls.Config{ServerName: "other.test"})},
		{name: "missing SNI", reason: "missing_sni", first: captureHello(t, &tls.Config{InsecureSkipVerify: true})},
		{name: "ALPN without http/1.1", reason: "bad_alpn", first: captureHello(t, &tls.Config{ServerName: "raw.test", NextProtos: []string{"h2"}})},
		{name: "16 KiB+1 first flight", reason: "too_large", first: big},
		{name: "slow first bytes", reason: "timeout", first: []byte("GET /echo HTTP/1.1\r\n"), slow: true},
	}
}

// TestInspectRefuses: every attack gets its 200 (the target was dialed),
// then is closed before a byte reaches the target, logged with its reason
// and counted as not_websocket.
func TestInspectRefuses(t *testing.T) {
	checkNoLeaks(t)
	iw := newInspectWorld(t, nil)
	sc := newScraper(t, iw.world)
	cases := attacks(t, iw.raw)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := iw.client(t, "")
			if resp, _, err := p.connect(iw.raw); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT %s = %v %v; want 200", iw.raw, resp, err)
			}
			tc2 := acceptTarget(t, iw.conns)
			start := time.Now()
			p.Write(tc.first) // may fail once the proxy has closed: that is the point
			p.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := io.Copy(io.Discard, p.br); n != 0 || isTimeout(err) {
				t.Fatalf("client read %d bytes, %v; want the proxy to close the tunnel", n, err)
			}
			if tc.slow && time.Since(start) < 400*time.Millisecond {
				t.Errorf("slow client closed after %v; want the 500ms header timeout", time.Since(start))
			}
			if got, err := io.ReadAll(tc2); len(got) != 0 || err != nil {
				t.Fatalf("target read %q, %v; want no byte and EOF", got, err)
			}
			eventually(t, 5*time.Second, "log line with reason "+tc.reason, func() bool {
				return strings.Contains(iw.logs.String(), `result=not_websocket rule="allow `+iw.raw+`" reason="`+tc.reason+`:`)
			})
		})
	}
	if got := sc.value(t, `wsegress_tunnels_total{result="not_websocket"}`); got != float64(len(cases)) {
		t.Errorf("not_websocket = %v; want %d", got, len(cases))
	}
	if got := sc.value(t, `wsegress_tunnels_total{result="ok"}`); got != 0 {
		t.Errorf("ok = %v; want 0", got)
	}
	if got := sc.value(t, `wsegress_tunnels_open`); got != 0 {
		t.Errorf("open tunnels = %v; want 0", got)
	}
}

// TestInspectReportMode: with --inspect-mode report, every attack goes on:
// the target gets its bytes, verbatim, and the tunnel is counted as
// would_deny with its reason.
func TestInspectReportMode(t *testing.T) {
	iw := newInspectWorld(t, func(c *proxy.Config) { c.Inspect.Mode = proxy.InspectReport })
	sc := newScraper(t, iw.world)
	cases := attacks(t, iw.raw)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := iw.client(t, "")
			if resp, _, err := p.connect(iw.raw); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT %s = %v %v; want 200", iw.raw, resp, err)
			}
			target := acceptTarget(t, iw.conns)
			if _, err := p.Write(tc.first); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(tc.first))
			if _, err := io.ReadFull(target, got); err != nil || !bytes.Equal(got, tc.first) {
				t.Fatalf("target read %d bytes (equal=%v), %v; want the first flight verbatim", len(got), bytes.Equal(got, tc.first), err)
			}
			// The tunnel is relayed: an answer goes back.
			io.WriteString(target, "pong")
			if b := make([]byte, 4); func() error { _, err := io.ReadFull(p.br, b); return err }() != nil || string(b) != "pong" {
				t.Fatalf("client did not get the target's answer: %q", b)
			}
			eventually(t, 5*time.Second, "would_deny log with reason "+tc.reason, func() bool {
				p.Close()
				target.Close()
				return strings.Contains(iw.logs.String(), `result=would_deny rule="allow `+iw.raw+`" reason="`+tc.reason+`:`)
			})
		})
	}
	if got := sc.value(t, `wsegress_tunnels_total{result="would_deny"}`); got != float64(len(cases)) {
		t.Errorf("would_deny = %v; want %d", got, len(cases))
	}
	if got := sc.value(t, `wsegress_tunnels_total{result="not_websocket"}`); got != 0 {
		t.Errorf("not_websocket = %v; want 0", got)
	}
}

// acceptTarget returns the target side of the tunnel just opened.
func acceptTarget(t *testing.T, conns <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-conns:
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("target saw no connection")
		return nil
	}
}

// TestInspectPasses: real clients with --websocket-only --sni-check on:
// gorilla ws and wss to IP targets (no SNI: allowed for an IP literal)
// and to a name (SNI checked), and crypto/tls with its ClientHello split
// into one-byte writes, and sent in the same write as the CONNECT.
func TestInspectPasses(t *testing.T) {
	checkNoLeaks(t)
	var cfg proxy.Config
	iw := newInspectWorld(t, func(c *proxy.Config) { cfg = *c })
	iw.allowEcho(t, cfg)
	sc := newScraper(t, iw.world)
	insecure := &tls.Config{InsecureSkipVerify: true} // the echo certificate does not name echo.test

	for _, tc := range []struct {
		name, url string
		tls       *tls.Config
	}{
		{"gorilla ws", wsURL(iw.world.ws, "ws"), nil},
		{"gorilla wss", wsURL(iw.wss, "wss"), nil},
		{"gorilla ws by name", "ws://" + iw.ws + "/echo", nil},
		{"gorilla wss by name", "wss://" + iw.echo + "/echo", insecure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := iw.wsDialer(iw.proxyURL)
			if tc.tls != nil {
				d.TLSClientConfig = tc.tls
			}
			c, resp, err := d.Dial(tc.url, nil)
			if err != nil {
				t.Fatalf("dial %s: %v (%v)", tc.url, err, resp)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.WriteMessage(websocket.TextMessage, []byte("hi"))
			if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "hi" {
				t.Fatalf("echo = %q %v", msg, err)
			}
		})
	}

	get := func(t *testing.T, c net.Conn) {
		t.Helper()
		tc := tls.Client(c, &tls.Config{ServerName: "echo.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS handshake through the tunnel: %v", err)
		}
		io.WriteString(tc, "GET /split HTTP/1.1\r\nHost: "+iw.echo+"\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.HasPrefix(string(body), "plain GET /split") {
			t.Fatalf("body = %q", body)
		}
	}
	t.Run("ClientHello split byte by byte", func(t *testing.T) {
		p := iw.client(t, "")
		if resp, _, err := p.connect(iw.echo); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT = %v %v", resp, err)
		}
		get(t, &byteWriter{Conn: p.Conn, r: p.br})
	})
	t.Run("ClientHello in the CONNECT write", func(t *testing.T) {
		p := iw.client(t, "")
		get(t, &inlineConnect{Conn: p.Conn, br: p.br, req: "CONNECT " + iw.echo + " HTTP/1.1\r\nHost: " + iw.echo + "\r\n\r\n"})
	})
	t.Run("handshake in the CONNECT write", func(t *testing.T) {
		p := iw.client(t, "")
		io.WriteString(p, "CONNECT "+iw.ws+" HTTP/1.1\r\n\r\n"+wsHandshake(iw.ws, "/echo"))
		resp, err := http.ReadResponse(p.br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT = %v %v", resp, err)
		}
		if resp, err := http.ReadResponse(p.br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("handshake = %v %v", resp, err)
		}
		if err := p.echo("pipelined"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("coder absolute-form", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(iw.proxyURL)}}
		c, _, err := cws.Dial(ctx, wsURL(iw.world.ws, "ws"), &cws.DialOptions{HTTPClient: hc})
		if err != nil {
			t.Fatalf("coder dial: %v", err)
		}
		defer c.CloseNow()
		c.Write(ctx, cws.MessageText, []byte("abs"))
		if _, msg, err := c.Read(ctx); err != nil || string(msg) != "abs" {
			t.Fatalf("echo = %q %v", msg, err)
		}
	})
	for _, result := range []string{"not_websocket", "would_deny"} {
		if got := sc.value(t, `wsegress_tunnels_total{result="`+result+`"}`); got != 0 {
			t.Errorf("%s = %v; want 0", result, got)
		}
	}
	eventually(t, 5*time.Second, "check= on the end lines", func() bool {
		l := iw.logs.String()
		return strings.Contains(l, "check=pass_tls") && strings.Contains(l, "check=pass_websocket")
	})
}

// byteWriter writes one byte per write (and TCP segment: Go sets
// TCP_NODELAY), reading through r.
type byteWriter struct {
	net.Conn
	r *bufio.Reader
}

func (c *byteWriter) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

func (c *byteWriter) Read(p []byte) (int, error) { return c.r.Read(p) }

// inlineConnect sends req in the same write as the first bytes written
// through it, and reads the 200 before the first read.
type inlineConnect struct {
	net.Conn
	br       *bufio.Reader
	req      string
	sent     bool
	answered bool
}

func (c *inlineConnect) Write(p []byte) (int, error) {
	if c.sent {
		return c.Conn.Write(p)
	}
	c.sent = true
	if _, err := c.Conn.Write(append([]byte(c.req), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *inlineConnect) Read(p []byte) (int, error) {
	if !c.answered {
		c.answered = true
		resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("CONNECT: %s", resp.Status)
		}
	}
	return c.br.Read(p)
}

// TestInspectSNICheckAlone: --sni-check without --websocket-only passes
// what is not TLS and refuses fronting.
func TestInspectSNICheckAlone(t *testing.T) {
	iw := newInspectWorld(t, func(c *proxy.Config) { c.Inspect = proxy.Inspect{SNICheck: true} })
	for _, tc := range []struct {
		name  string
		first []byte
		pass  bool
	}{
		{"plain bytes", []byte("SSH-2.0-OpenSSH_9.6\r\n"), true},
		{"SNI naming the target", captureHello(t, &tls.Config{ServerName: "raw.test", NextProtos: []string{"h2"}}), true},
		{"fronted SNI", captureHello(t, &tls.Config{ServerName: "other.test"}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := iw.client(t, "")
			if resp, _, err := p.connect(iw.raw); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT = %v %v", resp, err)
			}
			target := acceptTarget(t, iw.conns)
			p.Write(tc.first)
			if !tc.pass {
				if got, err := io.ReadAll(target); len(got) != 0 || err != nil {
					t.Fatalf("target read %q, %v; want no byte", got, err)
				}
				return
			}
			got := make([]byte, len(tc.first))
			if _, err := io.ReadFull(target, got); err != nil || !bytes.Equal(got, tc.first) {
				t.Fatalf("target read %q, %v; want the bytes verbatim", got, err)
			}
		})
	}
}

// TestInspectAllowMissingSNI: --allow-missing-sni lets a ClientHello
// without SNI through to a named target.
func TestInspectAllowMissingSNI(t *testing.T) {
	iw := newInspectWorld(t, func(c *proxy.Config) { c.Inspect.AllowMissingSNI = true })
	p := iw.client(t, "")
	if resp, _, err := p.connect(iw.raw); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT = %v %v", resp, err)
	}
	target := acceptTarget(t, iw.conns)
	hello := captureHello(t, &tls.Config{InsecureSkipVerify: true})
	p.Write(hello)
	got := make([]byte, len(hello))
	if _, err := io.ReadFull(target, got); err != nil || !bytes.Equal(got, hello) {
		t.Fatalf("target read %d bytes, %v; want the ClientHello", len(got), err)
	}
}

// TestInspectEmptyTunnel: a client that closes without sending a byte is
// not counted as not_websocket (nothing was judged, nothing forwarded).
func TestInspectEmptyTunnel(t *testing.T) {
	iw := newInspectWorld(t, nil)
	sc := newScraper(t, iw.world)
	p := iw.client(t, "")
	if resp, _, err := p.connect(iw.raw); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT = %v %v", resp, err)
	}
	target := acceptTarget(t, iw.conns)
	p.Close() // no byte at all: nothing to judge
	if got, err := io.ReadAll(target); len(got) != 0 || err != nil {
		t.Fatalf("target read %q, %v", got, err)
	}
	eventually(t, 5*time.Second, "end line", func() bool { return strings.Contains(iw.logs.String(), "end=client_closed") })
	if got := sc.value(t, `wsegress_tunnels_total{result="not_websocket"}`); got != 0 {
		t.Errorf("not_websocket = %v; want 0 for a tunnel that sent nothing", got)
	}
}

// TestInspectAbsoluteForm: --websocket-only on the absolute-form path
// checks the request itself: plain HTTP and a broken upgrade get 403
// (not_websocket) without a byte to the target; in report mode they go on.
func TestInspectAbsoluteForm(t *testing.T) {
	for _, report := range []bool{false, true} {
		t.Run(fmt.Sprintf("report=%v", report), func(t *testing.T) {
			w := newWorld(t, func(c *proxy.Config) {
				c.Inspect.WebSocketOnly = true
				if report {
					c.Inspect.Mode = proxy.InspectReport
				}
			})
			sc := newScraper(t, w)
			target := w.ws.Listener.Addr().String()
			p := w.client(t, "")
			resp, body, err := p.roundTrip("GET http://"+target+"/plain HTTP/1.1\r\nHost: "+target+"\r\n\r\n", http.MethodGet)
			if err != nil {
				t.Fatal(err)
			}
			want := http.StatusForbidden
			if report {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Fatalf("plain GET = %d %q; want %d", resp.StatusCode, body, want)
			}
			p2 := w.client(t, "")
			resp, _, err = p2.roundTrip("GET ws://"+target+"/echo HTTP/1.1\r\nHost: "+target+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", http.MethodGet)
			if err != nil {
				t.Fatal(err)
			}
			if report {
				want = http.StatusBadRequest // the target's answer to an upgrade without a key
			}
			if resp.StatusCode != want {
				t.Fatalf("upgrade without Sec-WebSocket-Key = %d; want %d", resp.StatusCode, want)
			}
			result := "not_websocket"
			if report {
				result = "would_deny"
			}
			// Counted when the request ends, which is after the client has
			// read its answer.
			eventually(t, 5*time.Second, result+" = 2", func() bool {
				return sc.value(t, `wsegress_tunnels_total{result="`+result+`"}`) == 2
			})
		})
	}
}

// TestACLReportRule: a report rule (and --acl-mode report) lets the tunnel
// go on, logged and counted as would_deny with the rule that would deny.
func TestACLReportRule(t *testing.T) {
	for _, tc := range []struct {
		name, rule string
		mutate     func(c *proxy.Config, target string)
	}{
		{"report rule", "trial", func(c *proxy.Config, target string) {
			c.ACL.Rules = append([]acl.RuleSpec{{Name: "trial", Action: "report", Target: target}}, c.ACL.Rules...)
		}},
		{"acl mode report", "block", func(c *proxy.Config, target string) {
			c.ACL.Mode = acl.ModeReport
			c.ACL.Rules = append([]acl.RuleSpec{{Name: "block", Action: "deny", Target: target}}, c.ACL.Rules...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var target string
			w := newWorld(t, func(c *proxy.Config) {
				target = c.ACL.Rules[0].Target // the ws echo target
				tc.mutate(c, target)
			})
			sc := newScraper(t, w)
			// CONNECT with a WebSocket, and an absolute-form upgrade.
			c, resp, err := w.wsDialer(w.proxyURL).Dial("ws://"+target+"/echo", nil)
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, resp)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.WriteMessage(websocket.TextMessage, []byte("hi"))
			if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "hi" {
				t.Fatalf("echo = %q %v", msg, err)
			}
			c.Close()
			p := w.client(t, "")
			if resp, body, err := p.roundTrip("GET http://"+target+"/plain HTTP/1.1\r\nHost: "+target+"\r\n\r\n", http.MethodGet); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("plain GET = %v %q %v", resp, body, err)
			}
			eventually(t, 5*time.Second, "would_deny lines", func() bool {
				return strings.Count(w.logs.String(), `result=would_deny rule=`+tc.rule+` reason=`) == 2
			})
			for series, want := range map[string]float64{
				`wsegress_tunnels_total{result="would_deny"}`:           2,
				`wsegress_tunnels_total{result="ok"}`:                   0,
				`wsegress_acl_would_deny_total{rule="` + tc.rule + `"}`: 2,
				`wsegress_acl_denials_total{rule="` + tc.rule + `"}`:    0,
				`wsegress_requests_total{kind="connect"}`:               1,
			} {
				if got := sc.value(t, series); got != want {
					t.Errorf("%s = %v; want %v", series, got, want)
				}
			}
		})
	}
}

// TestInspectRuleWebSocketOnly: websocket_only on an allow rule checks
// only the tunnels that rule allows.
func TestInspectRuleWebSocketOnly(t *testing.T) {
	other, otherConns := rawTarget(t)
	iw := newInspectWorld(t, func(c *proxy.Config) {
		c.Inspect = proxy.Inspect{}
		for i, r := range c.ACL.Rules {
			if strings.HasPrefix(r.Target, "raw.test:") {
				c.ACL.Rules[i].WebSocketOnly = true
			}
		}
		c.ACL.Rules = append(c.ACL.Rules, allowRule(other.Addr()))
	})
	for _, tc := range []struct {
		target string
		conns  <-chan net.Conn
		pass   bool
	}{
		{iw.raw, iw.conns, false},
		{other.Addr().String(), otherConns, true},
	} {
		t.Run(tc.target, func(t *testing.T) {
			p := iw.client(t, "")
			if resp, _, err := p.connect(tc.target); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT = %v %v", resp, err)
			}
			target := acceptTarget(t, tc.conns)
			p.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
			if !tc.pass {
				if got, err := io.ReadAll(target); len(got) != 0 || err != nil {
					t.Fatalf("target read %q, %v; want no byte", got, err)
				}
				return
			}
			got := make([]byte, 4)
			if _, err := io.ReadFull(target, got); err != nil || string(got) != "SSH-" {
				t.Fatalf("target read %q, %v", got, err)
			}
		})
	}
}

// TestInspectShutdownMidFlight: a drain that ends while a tunnel's first
// bytes are being read closes it as canceled, not as not_websocket.
func TestInspectShutdownMidFlight(t *testing.T) {
	iw := newInspectWorld(t, func(c *proxy.Config) { c.HeaderTimeout = 10 * time.Second })
	sc := newScraper(t, iw.world)
	p := iw.client(t, "")
	if resp, _, err := p.connect(iw.raw); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT = %v %v", resp, err)
	}
	target := acceptTarget(t, iw.conns)
	io.WriteString(p, "GET /echo HTTP/1.1\r\n")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace: close what is open
	iw.proxy.Shutdown(ctx)
	if got, err := io.ReadAll(target); len(got) != 0 || err != nil {
		t.Fatalf("target read %q, %v; want no byte", got, err)
	}
	eventually(t, 5*time.Second, "end=canceled", func() bool { return strings.Contains(iw.logs.String(), "end=canceled") })
	if got := sc.value(t, `wsegress_tunnels_total{result="not_websocket"}`); got != 0 {
		t.Errorf("not_websocket = %v; want 0", got)
	}
}
