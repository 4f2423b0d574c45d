package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsegress/wsegress/proxy"
)

// tunnelResult is one CONNECT made from a goroutine.
type tunnelResult struct {
	p      *proxyConn
	status int
	body   string
	retry  string
	took   time.Duration
	err    error
}

// openTunnels makes n CONNECTs to target at once, each on its own
// connection from src, and returns when all have been answered. The
// caller closes every result's p.
func openTunnels(w *world, n int, src, target string, headers ...string) []tunnelResult {
	res := make([]tunnelResult, n)
	var wg sync.WaitGroup
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &res[i]
			start := time.Now()
			if r.p, r.err = openProxyConn(w, src); r.err != nil {
				return
			}
			resp, body, err := r.p.connect(target, headers...)
			r.took, r.err, r.body = time.Since(start), err, body
			if err == nil {
				r.status, r.retry = resp.StatusCode, resp.Header.Get("Retry-After")
			}
		}()
	}
	wg.Wait()
	return res
}

// countStatus fails on any error and counts the results by status.
func countStatus(t *testing.T, res []tunnelResult) map[int]int {
	t.Helper()
	t.Cleanup(func() {
		for _, r := range res {
			if r.p != nil {
				r.p.Close()
			}
		}
	})
	n := map[int]int{}
	for _, r := range res {
		if r.err != nil {
			t.Fatalf("CONNECT: %v", r.err)
		}
		n[r.status]++
	}
	return n
}

// TestLimitGlobal: with a pool of 20, 30 concurrent CONNECTs get exactly
// 20 tunnels and 10 quick 503s naming the global limit; the 20 work; once
// closed, their slots are all back.
func TestLimitGlobal(t *testing.T) {
	w := newWorld(t, func(c *proxy.Config) { c.Limits.Global = 20 })
	target := w.ws.Listener.Addr().String()
	res := openTunnels(w, 30, "", target)
	if n := countStatus(t, res); n[200] != 20 || n[503] != 10 {
		t.Fatalf("statuses %v; want 20 × 200 and 10 × 503", n)
	}
	for i, r := range res {
		switch r.status {
		case 503:
			if r.retry == "" || !strings.Contains(r.body, "global") || r.took > 5*time.Second {
				t.Errorf("503 %d: Retry-After %q, body %q, after %v; want a Retry-After, a body naming the global limit, at once", i, r.retry, r.body, r.took)
			}
		case 200:
			if err := r.p.wsEcho(target, fmt.Sprint("tunnel ", i)); err != nil {
				t.Errorf("tunnel %d: %v", i, err)
			}
		}
	}
	for _, r := range res {
		r.p.Close()
	}
	eventually(t, 5*time.Second, "every tunnel closed", func() bool { return w.proxy.OpenTunnels() == 0 })
	again := openTunnels(w, 21, "", target)
	if n := countStatus(t, again); n[200] != 20 || n[503] != 1 {
		t.Fatalf("after closing: statuses %v; want 20 × 200 and 1 × 503 (no leaked slots)", n)
	}
}

// TestLimitPerUser: each user has its own cap; a freed slot is reusable.
func TestLimitPerUser(t *testing.T) {
	w := newWorld(t, chain(withUsers(t, "alice", "pw-a", "bob", "pw-b"), func(c *proxy.Config) { c.Limits.PerUser = 2 }))
	target := w.ws.Listener.Addr().String()
	alice := openTunnels(w, 3, "", target, basic("alice", "pw-a"))
	if n := countStatus(t, alice); n[200] != 2 || n[503] != 1 {
		t.Fatalf("alice: statuses %v; want 2 × 200, 1 × 503", n)
	}
	for _, r := range alice {
		if r.status == 503 && !strings.Contains(r.body, "user") {
			t.Errorf("503 body %q; want it to name the user limit", r.body)
		}
	}
	if n := countStatus(t, openTunnels(w, 2, "", target, basic("bob", "pw-b"))); n[200] != 2 {
		t.Fatalf("bob while alice is at her cap: %v; want 2 × 200", n)
	}
	for _, r := range alice {
		if r.status == 200 {
			r.p.Close()
			break
		}
	}
	eventually(t, 5*time.Second, "alice's freed slot", func() bool {
		p, err := openProxyConn(w, "")
		if err != nil {
			t.Fatal(err)
		}
		resp, _, err := p.connect(target, basic("alice", "pw-a"))
		if err == nil && resp.StatusCode == 200 {
			t.Cleanup(func() { p.Close() })
			return true
		}
		p.Close()
		return false
	})
}

// TestLimitPerIP: each client address has its own cap (127.0.0.2 is a
// second client).
func TestLimitPerIP(t *testing.T) {
	w := newWorld(t, func(c *proxy.Config) { c.Limits.PerIP = 2 })
	target := w.ws.Listener.Addr().String()
	for _, src := range []string{"127.0.0.1", "127.0.0.2"} {
		res := openTunnels(w, 3, src, target)
		if res[0].err != nil && src == "127.0.0.2" {
			skipOrFail(t, "second client address: %v", res[0].err)
		}
		if n := countStatus(t, res); n[200] != 2 || n[503] != 1 {
			t.Fatalf("from %s: statuses %v; want 2 × 200, 1 × 503", src, n)
		}
		for _, r := range res {
			if r.status == 503 && !strings.Contains(r.body, "client_ip") {
				t.Errorf("503 body %q; want it to name the client IP limit", r.body)
			}
		}
	}
}

// TestLimitQueue: a queued CONNECT is served when a slot frees, refused
// with 503 when none does in time, and gives up its place at once when
// its client goes away.
func TestLimitQueue(t *testing.T) {
	setup := func(t *testing.T, wait time.Duration) (*world, *scraper, string, *proxyConn) {
		w := newWorld(t, func(c *proxy.Config) { c.Limits.Global = 1; c.QueueTimeout = wait })
		target := w.ws.Listener.Addr().String()
		holder := w.client(t, "")
		if resp, _, err := holder.connect(target); err != nil || resp.StatusCode != 200 {
			t.Fatalf("first CONNECT = %v %v", resp, err)
		}
		return w, newScraper(t, w), target, holder
	}
	waiting := func(t *testing.T, s *scraper, n float64) {
		t.Helper()
		eventually(t, 5*time.Second, fmt.Sprintf("%v queued", n), func() bool {
			return s.value(t, `wsegress_queue_waiting{kind="global"}`) == n
		})
	}
	queue := func(w *world, target string) (*proxyConn, chan tunnelResult) {
		ch := make(chan tunnelResult, 1)
		p, err := openProxyConn(w, "")
		if err != nil {
			ch <- tunnelResult{err: err}
			return nil, ch
		}
		go func() {
			start := time.Now()
			resp, body, err := p.connect(target)
			r := tunnelResult{p: p, err: err, body: body, took: time.Since(start)}
			if err == nil {
				r.status = resp.StatusCode
			}
			ch <- r
		}()
		return p, ch
	}

	t.Run("served", func(t *testing.T) {
		w, s, target, holder := setup(t, 20*time.Second)
		p, ch := queue(w, target)
		defer p.Close()
		waiting(t, s, 1)
		holder.Close()
		if r := <-ch; r.err != nil || r.status != 200 {
			t.Fatalf("queued CONNECT = %d %q %v; want 200 once the slot freed", r.status, r.body, r.err)
		}
		if err := p.wsEcho(target, "queued"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		const wait = 300 * time.Millisecond
		w, _, target, _ := setup(t, wait)
		p, ch := queue(w, target)
		defer p.Close()
		r := <-ch
		if r.err != nil || r.status != 503 || !strings.Contains(r.body, "global") || r.took < wait {
			t.Fatalf("CONNECT with no slot freeing = %d %q %v after %v; want 503 naming the global limit after %v", r.status, r.body, r.err, r.took, wait)
		}
	})
	t.Run("client leaves queue", func(t *testing.T) {
		w, s, target, holder := setup(t, 20*time.Second)
		gone, goneCh := queue(w, target)
		waiting(t, s, 1)
		later, laterCh := queue(w, target)
		defer later.Close()
		waiting(t, s, 2)
		gone.Close()
		waiting(t, s, 1) // at once: not when a slot frees
		holder.Close()
		if r := <-laterCh; r.err != nil || r.status != 200 {
			t.Fatalf("later waiter = %d %q %v; want 200", r.status, r.body, r.err)
		}
		<-goneCh
		if err := later.wsEcho(target, "later"); err != nil {
			t.Fatal(err)
		}
		if got := s.value(t, `wsegress_pool_slots_in_use{kind="global"}`); got != 1 {
			t.Errorf("slots in use = %v; want 1 (the later waiter's)", got)
		}
	})
}

// TestLimitPending: requests between accept and the 200 are capped by
// MaxPending; here a resolver holds them until the test lets go.
func TestLimitPending(t *testing.T) {
	release := make(chan struct{})
	var blocked atomic.Int32
	w := newWorld(t, func(c *proxy.Config) {
		c.MaxPending = 3
		c.DialTimeout = 30 * time.Second
		c.ACL.Rules = append(c.ACL.Rules, allow("slow.test"))
		c.Resolver = resolverFunc(func(ctx context.Context, host string) ([]netip.Addr, error) {
			blocked.Add(1)
			defer blocked.Add(-1)
			select {
			case <-release:
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})
	})
	s := newScraper(t, w)
	_, port, _ := net.SplitHostPort(w.ws.Listener.Addr().String())
	slow := "slow.test:" + port
	results := make(chan tunnelResult, 3)
	for range 3 {
		go func() { results <- openTunnels(w, 1, "", slow)[0] }()
	}
	eventually(t, 10*time.Second, "3 CONNECTs held in the resolver", func() bool { return blocked.Load() == 3 })
	if got := s.value(t, `wsegress_pool_slots_in_use{kind="pending"}`); got != 3 {
		t.Errorf("pending slots in use = %v; want 3", got)
	}
	resp, body, err := w.client(t, "").connect(w.ws.Listener.Addr().String())
	if err != nil || resp.StatusCode != 503 || !strings.Contains(body, "pending") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("4th CONNECT = %v %q %v; want 503 naming the pending limit, with Retry-After", resp, body, err)
	}
	// Plain-HTTP forwarding passes the same gate.
	fresp, fbody, fc, _ := w.rawRequest("GET http://" + w.ws.Listener.Addr().String() + "/ HTTP/1.1\r\nHost: x\r\n\r\n")
	fc.Close()
	if fresp.StatusCode != 503 || !strings.Contains(fbody, "pending") {
		t.Errorf("forwarded GET while pending is full = %d %q; want 503 naming the pending limit", fresp.StatusCode, fbody)
	}
	close(release)
	for range 3 {
		r := <-results
		if r.p != nil {
			defer r.p.Close()
		}
		if r.err != nil || r.status != 200 {
			t.Errorf("held CONNECT = %d %q %v; want 200 once resolved", r.status, r.body, r.err)
		}
	}
	if resp, _, err := w.client(t, "").connect(w.ws.Listener.Addr().String()); err != nil || resp.StatusCode != 200 {
		t.Errorf("CONNECT after the pending ones finished = %v %v; want 200", resp, err)
	}
}

// TestLimitChurn opens 2,000 tunnels, 50 at a time, and abandons them in
// odd ways; afterwards fds, goroutines, slots and tunnels are back to
// where they started.
func TestLimitChurn(t *testing.T) {
	const total, parallel = 2000, 50
	w := newWorld(t, func(c *proxy.Config) { c.Limits.Global = 1000 })
	s := newScraper(t, w)
	target := w.ws.Listener.Addr().String()
	connect := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
	hs := wsHandshake(target, "/echo")
	rst := func(p *proxyConn) { p.Conn.(*net.TCPConn).SetLinger(0); p.Close() }
	open := func(p *proxyConn) error {
		resp, body, err := p.connect(target)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("CONNECT = %d %q", resp.StatusCode, body)
		}
		return err
	}
	modes := []struct {
		name string
		run  func(p *proxyConn) error
	}{
		{"close before 200", func(p *proxyConn) error { _, err := io.WriteString(p, connect); p.Close(); return err }},
		{"reset before 200", func(p *proxyConn) error { _, err := io.WriteString(p, connect); rst(p); return err }},
		{"close mid-request", func(p *proxyConn) error { _, err := io.WriteString(p, connect[:20]); p.Close(); return err }},
		{"close mid-handshake", func(p *proxyConn) error {
			err := open(p)
			io.WriteString(p, hs[:len(hs)/2])
			p.Close()
			return err
		}},
		{"reset mid-handshake", func(p *proxyConn) error { err := open(p); io.WriteString(p, hs); rst(p); return err }},
		{"reset after echo", func(p *proxyConn) error {
			err := open(p)
			if err == nil {
				err = p.wsEcho(target, "x")
			}
			rst(p)
			return err
		}},
		{"half close", func(p *proxyConn) error {
			err := open(p)
			p.Conn.(*net.TCPConn).CloseWrite()
			if err == nil {
				_, err = io.Copy(io.Discard, p.br)
			}
			p.Close()
			return err
		}},
		{"pipelined then reset", func(p *proxyConn) error {
			_, err := io.WriteString(p, connect+hs+string(maskedFrame("y")))
			rst(p)
			return err
		}},
	}

	s.metrics(t) // warm the scraper's code paths before counting
	_, socks0, pipes0 := fdCounts(t)
	g0 := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	started := 0
	for i := 0; i < total && ctx.Err() == nil; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m := modes[i%len(modes)]
			p, err := openProxyConn(w, "")
			if err == nil {
				err = m.run(p)
				p.Close()
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s: %v", m.name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if started < total {
		t.Fatalf("only %d of %d tunnels in 60s", started, total)
	}
	if len(errs) > 0 {
		t.Errorf("%d of %d tunnels failed before their planned abort; first: %v", len(errs), total, errs[:min(5, len(errs))])
	}
	// Four of the eight modes wait for their 200.
	if ok := s.value(t, `wsegress_tunnels_total{result="ok"}`); ok < total/2 {
		t.Errorf("tunnels_total{result=ok} = %v; want at least %d", ok, total/2)
	}
	eventuallyErr(t, 20*time.Second, func() error {
		m := s.metrics(t)
		_, socks, pipes := fdCounts(t)
		gs := runtime.NumGoroutine()
		global, pending := m[`wsegress_pool_slots_in_use{kind="global"}`], m[`wsegress_pool_slots_in_use{kind="pending"}`]
		state := fmt.Sprintf("socket fds %d (baseline %d), pipe fds %d (%d), goroutines %d (%d), global slots %v, pending %v, open tunnels %d",
			socks, socks0, pipes, pipes0, gs, g0, global, pending, w.proxy.OpenTunnels())
		if socks <= socks0 && pipes <= pipes0+maxSparePipeFDs && gs <= g0 && w.proxy.OpenTunnels() == 0 && global == 0 && pending == 0 {
			t.Logf("after %d tunnels: %s", total, state)
			return nil
		}
		return fmt.Errorf("after %d tunnels: %s; want all back to baseline", total, state)
	})
}

// maxSparePipeFDs is the relay's bounded cache of splice pipes (64 pipes,
// two fds each, proxy/relay/copy_linux.go maxSparePipes): kept on purpose
// for reuse, so fds in pipes may stay up to that much above the baseline.
const maxSparePipeFDs = 2 * 64
