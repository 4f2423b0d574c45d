package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy"
)

// recorder is a listener that the ACL must keep the proxy away from (or
// let it through to): it records every connection it accepts, greets it
// with "hello from ADDR\n" and closes it when the peer does (or at
// cleanup).
type recorder struct {
	ln      net.Listener
	mu      sync.Mutex
	remotes []string
}

// newRecorder listens on ip:port (port 0: any). A machine without
// 127.0.0.2 on its loopback skips, except under CI.
func newRecorder(t *testing.T, ip string, port int) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		skipOrFail(t, "listen on %s: %v", ip, err)
	}
	r := &recorder{ln: ln}
	var wg sync.WaitGroup
	var cmu sync.Mutex // guards conns and closed
	conns := map[net.Conn]bool{}
	closed := false
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.remotes = append(r.remotes, c.RemoteAddr().String())
			r.mu.Unlock()
			cmu.Lock()
			if closed {
				c.Close()
			}
			conns[c] = true
			cmu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.WriteString(c, "hello from "+ln.Addr().String()+"\n")
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	return r
}

func (r *recorder) port() uint16 { return uint16(r.ln.Addr().(*net.TCPAddr).Port) }

// drain returns the connections accepted so far, without waiting on the
// clock: it connects itself and waits (with a deadline) until the listener
// has accepted that sentinel connection. The kernel hands out completed
// connections in order, so any connection the proxy made before is
// accepted before the sentinel.
func (r *recorder) drain(t *testing.T) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("sentinel dial: %v", err)
	}
	defer c.Close()
	me := c.LocalAddr().String()
	var got []string
	eventually(t, 5*time.Second, "the recorder to accept the sentinel", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, a := range r.remotes {
			if a == me {
				got = append([]string(nil), r.remotes[:i]...)
				r.remotes = append(r.remotes[:i], r.remotes[i+1:]...)
				return true
			}
		}
		return false
	})
	return got
}

// resolverFunc adapts a function to proxy.Resolver.
type resolverFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, _, host string) ([]netip.Addr, error) {
	return f(ctx, host)
}

// staticResolver answers from m, case-insensitively and ignoring one
// trailing dot, as DNS does; any other name does not exist. Tests never
// reach a real resolver.
func staticResolver(m map[string][]string) resolverFunc {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, s := range m[strings.TrimSuffix(strings.ToLower(host), ".")] {
			out = append(out, netip.MustParseAddr(s))
		}
		if len(out) == 0 {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return out, nil
	}
}

func allow(target string) acl.RuleSpec { return acl.RuleSpec{Action: "allow", Target: target} }

// TestACLBypassForms: every spelling of a denied loopback address, through
// CONNECT, absolute-form upgrades and plain GETs, is 400 or 403 and never
// reaches the listener behind it.
func TestACLBypassForms(t *testing.T) {
	rec := newRecorder(t, "127.0.0.2", 0)
	p := rec.port()
	w := newWorld(t, func(c *proxy.Config) {
		c.ACL.Rules = append(c.ACL.Rules, allow(fmt.Sprintf("*.test:%d", p)))
		c.Resolver = staticResolver(map[string][]string{
			"evil.test": {"127.0.0.2"}, "mapped.test": {"::ffff:127.0.0.2"}, "localhost": {"127.0.0.2"},
		})
	})
	hosts := []string{
		"127.0.0.2", "2130706434", "0x7f000002", "0X7F000002", "127.2", "127.0.2", "0177.0.0.2",
		"0177.0.0.02", "127.000.000.002", "0x7f.0.0.2", "[::ffff:127.0.0.2]", "[::FFFF:7F00:2]",
		"[0:0:0:0:0:ffff:127.0.0.2]", "[::127.0.0.2]", "127.0.0.2.", "127%2e0.0.2", "[::ffff:127.0.0.2%25lo]",
		"evil.test", "EVIL.TEST", "Evil.Test.", "mapped.test", "localhost", "LocalHost", "LOCALHOST.",
	}
	var reqs []string
	for _, h := range hosts {
		hp := fmt.Sprintf("%s:%d", h, p)
		reqs = append(reqs,
			"CONNECT "+hp+" HTTP/1.1\r\nHost: "+hp+"\r\n\r\n",
			"GET ws://"+hp+"/ HTTP/1.1\r\nHost: "+hp+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
			"GET http://"+hp+"/ HTTP/1.1\r\nHost: "+hp+"\r\n\r\n")
	}
	for _, port := range []string{fmt.Sprintf("+%d", p), fmt.Sprintf("0%d", p), fmt.Sprintf("%d ", p)} {
		reqs = append(reqs, "CONNECT 127.0.0.2:"+port+" HTTP/1.1\r\n\r\n")
	}
	for _, req := range reqs {
		t.Run(firstLine(req), func(t *testing.T) {
			resp, body, err := w.client(t, "").roundTrip(req, strings.Fields(req)[0])
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 400 && resp.StatusCode != 403 {
				t.Errorf("status = %d %q; want 400 or 403", resp.StatusCode, body)
			}
		})
	}
	if got := rec.drain(t); len(got) != 0 {
		t.Errorf("the denied listener accepted %d connections from %v; want none", len(got), got)
	}
	// The denial names the rule and says why.
	line := regexp.MustCompile(`(?m)^.*target=evil\.test:\d+ status=403 .*$`).FindString(w.logs.String())
	if !regexp.MustCompile(`rule=builtin:non-public reason="[^"]+`).MatchString(line) {
		t.Errorf("denial log line %q: want rule=builtin:non-public and a reason", line)
	}
}

// TestACLResolvedNames: an exact host allow reaches a loopback address its
// name resolves to; a wildcard never does; a name with an allowed and a
// denied address is dialed only at the allowed one.
func TestACLResolvedNames(t *testing.T) {
	rec := newRecorder(t, "127.0.0.2", 0)
	p := rec.port()
	allowed := newRecorder(t, "127.0.0.1", 0)
	w := newWorld(t, func(c *proxy.Config) {
		c.ACL.Rules = append(c.ACL.Rules, allow(fmt.Sprintf("*.test:%d", p)), allow(fmt.Sprintf("intranet.test:%d", p)),
			allow(fmt.Sprintf("127.0.0.1:%d", allowed.port())))
		c.Resolver = staticResolver(map[string][]string{
			"evil.test": {"127.0.0.2"}, "intranet.test": {"127.0.0.2"},
			"mixed.test": {"127.0.0.2", "127.0.0.1"},
		})
	})
	for _, tc := range []struct {
		target string
		want   int
		greet  string
	}{
		{fmt.Sprintf("evil.test:%d", p), 403, ""},
		{fmt.Sprintf("intranet.test:%d", p), 200, "hello from " + rec.ln.Addr().String() + "\n"},
		{fmt.Sprintf("mixed.test:%d", allowed.port()), 200, "hello from " + allowed.ln.Addr().String() + "\n"},
	} {
		pc := w.client(t, "")
		resp, body, err := pc.connect(tc.target)
		if err != nil || resp.StatusCode != tc.want {
			t.Fatalf("CONNECT %s = %v %q %v; want %d", tc.target, resp, body, err, tc.want)
		}
		if tc.greet != "" {
			if got, err := pc.br.ReadString('\n'); got != tc.greet {
				t.Errorf("through %s read %q %v; want %q", tc.target, got, err, tc.greet)
			}
		}
	}
	if got := rec.drain(t); len(got) != 1 {
		t.Errorf("127.0.0.2 accepted %v; want exactly the intranet.test tunnel", got)
	}
	if got := allowed.drain(t); len(got) != 1 {
		t.Errorf("127.0.0.1 accepted %v; want exactly the mixed.test tunnel", got)
	}
}

// TestACLRebinding: a name answering an allowed address on one lookup and
// a denied one on the next. The proxy resolves once and dials what it
// checked, so the denied listener, on the same port, never sees a
// connection.
func TestACLRebinding(t *testing.T) {
	var good, bad *recorder
	for i := 0; i < 20 && good == nil; i++ {
		b := newRecorder(t, "127.0.0.2", 0)
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", b.port())); err == nil {
			ln.Close()
			bad, good = b, newRecorder(t, "127.0.0.1", int(b.port()))
		}
	}
	if good == nil {
		t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	}
	var lookups atomic.Int32
	w := newWorld(t, func(c *proxy.Config) {
		c.ACL.Rules = append(c.ACL.Rules, allow(fmt.Sprintf("127.0.0.1:%d", good.port())))
		c.Resolver = resolverFunc(func(_ context.Context, host string) ([]netip.Addr, error) {
			if lookups.Add(1)%2 == 1 {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
		})
	})
	target := fmt.Sprintf("rebind.test:%d", good.port())
	const n = 8
	oks := 0
	for i := range n {
		pc := w.client(t, "")
		resp, body, err := pc.connect(target)
		if err != nil {
			t.Fatal(err)
		}
		switch resp.StatusCode {
		case 200:
			oks++
			if got, _ := pc.br.ReadString('\n'); got != "hello from "+good.ln.Addr().String()+"\n" {
				t.Errorf("CONNECT %d reached %q; want the 127.0.0.1 listener", i, got)
			}
		case 403:
		default:
			t.Errorf("CONNECT %d = %d %q; want 200 or 403", i, resp.StatusCode, body)
		}
	}
	if got := bad.drain(t); len(got) != 0 {
		t.Errorf("the rebound address 127.0.0.2 accepted %v; want none", got)
	}
	if got := good.drain(t); len(got) != oks {
		t.Errorf("127.0.0.1 accepted %d connections; want one per 200 (%d)", len(got), oks)
	}
	if l := lookups.Load(); l != n {
		t.Errorf("%d lookups for %d CONNECTs; want one each (a second lookup is the rebinding hole)", l, n)
	}
	if oks != n/2 {
		t.Errorf("%d of %d CONNECTs got 200; want every other one", oks, n)
	}
}

// TestACLSelfLoop: the proxy's own address is never a target, even with a
// rule allowing its address.
func TestACLSelfLoop(t *testing.T) {
	w := newWorld(t, func(c *proxy.Config) {
		c.ACL.Rules = append(c.ACL.Rules, allow("127.0.0.1"), allow("0.0.0.0"), allow("loop.test"))
		c.Resolver = staticResolver(map[string][]string{"loop.test": {"127.0.0.1"}})
	})
	_, port, _ := net.SplitHostPort(w.proxyURL.Host)
	for _, host := range []string{"127.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0", "loop.test"} {
		target := net.JoinHostPort(strings.Trim(host, "[]"), port)
		resp, body, err := w.client(t, "").connect(target)
		if err != nil || resp.StatusCode != 403 {
			t.Errorf("CONNECT %s (the proxy itself) = %v %q %v; want 403", target, resp, body, err)
		}
	}
	// The allow rule works for other ports, so the 403s were the loop check.
	if resp, _, err := w.client(t, "").connect(w.ws.Listener.Addr().String()); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT echo target = %v %v; want 200", resp, err)
	}
	eventually(t, 5*time.Second, "rule=builtin:self in the log", func() bool {
		return strings.Count(w.logs.String(), "rule=builtin:self") == 4
	})
}

// TestACLReload: new rules apply to new tunnels; an open tunnel that the
// new rules would deny stays open.
func TestACLReload(t *testing.T) {
	a, aConns := rawTarget(t)
	b, bConns := rawTarget(t)
	var cfg proxy.Config
	w := newWorld(t, func(c *proxy.Config) { withAllow(a.Addr())(c); cfg = *c })
	c, br, tc := connectRaw(t, w, a.Addr().String(), aConns)

	cfg.ACL.Rules = []acl.RuleSpec{allowRule(b.Addr())}
	if err := w.proxy.Reload(cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	io.WriteString(c, "up after reload\n")
	if got, err := readLine(tc); err != nil || got != "up after reload\n" {
		t.Fatalf("open tunnel, client to target after reload: %q %v", got, err)
	}
	io.WriteString(tc, "down after reload\n")
	if got, err := br.ReadString('\n'); err != nil || got != "down after reload\n" {
		t.Fatalf("open tunnel, target to client after reload: %q %v", got, err)
	}
	if resp, _, err := w.client(t, "").connect(a.Addr().String()); err != nil || resp.StatusCode != 403 {
		t.Errorf("new CONNECT to the no longer allowed target = %v %v; want 403", resp, err)
	}
	if resp, _, err := w.client(t, "").connect(b.Addr().String()); err != nil || resp.StatusCode != 200 {
		t.Errorf("new CONNECT to the newly allowed target = %v %v; want 200", resp, err)
	}
	select {
	case <-bConns:
	case <-time.After(5 * time.Second):
		t.Error("the newly allowed target saw no connection")
	}
	if resp, _, err := w.client(t, "").connect(w.ws.Listener.Addr().String()); err != nil || resp.StatusCode != 403 {
		t.Errorf("CONNECT to a target the new rules drop = %v %v; want 403", resp, err)
	}
	if n := w.proxy.OpenTunnels(); n < 1 {
		t.Errorf("OpenTunnels = %d; the pre-reload tunnel should still count", n)
	}
}

// readLine reads one line byte by byte, so nothing behind it is consumed.
func readLine(c net.Conn) (string, error) {
	var b strings.Builder
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			return b.String(), err
		}
		b.WriteByte(one[0])
		if one[0] == '\n' {
			return b.String(), nil
		}
	}
}
