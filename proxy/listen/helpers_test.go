package listen

import (
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// eventually waits for cond, failing the test after d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// world is a Listener on 127.0.0.1:0 with its refusals recorded.
type world struct {
	t  testing.TB
	l  *Listener
	mu sync.Mutex
	rs []Refusal
}

func newWorld(t testing.TB, network, addr string, cfg Config) *world {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t}
	next := cfg.OnRefuse
	cfg.OnRefuse = func(r Refusal) {
		w.mu.Lock()
		w.rs = append(w.rs, r)
		w.mu.Unlock()
		if next != nil {
			next(r)
		}
	}
	w.l = New(ln, cfg)
	t.Cleanup(func() { w.l.Close() })
	return w
}

func (w *world) refusals() []Refusal {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Refusal(nil), w.rs...)
}

// dial connects from the source address src ("" for any).
func (w *world) dial(src string) net.Conn {
	w.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", w.l.Addr().String())
	if err != nil {
		w.t.Fatalf("dial from %q: %v", src, err)
	}
	w.t.Cleanup(func() { c.Close() })
	return c
}

// accept waits up to 5s for Accept.
func (w *world) accept() net.Conn {
	w.t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := w.l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			w.t.Fatalf("Accept: %v", r.err)
		}
		w.t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(5 * time.Second):
		w.t.Fatal("Accept: nothing within 5s")
		return nil
	}
}

// assertClosed checks that the server closed c: a read ends with EOF or a
// reset, not a timeout.
func assertClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [64]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("conn from %v still open", c.LocalAddr())
		}
		return
	}
}

// assertOpen checks that c is still open: a short read times out.
func assertOpen(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var b [1]byte
	_, err := c.Read(b[:])
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("conn from %v: read = %v; want a timeout (still open)", c.LocalAddr(), err)
	}
	c.SetReadDeadline(time.Time{})
}

func mustPrefixes(t testing.TB, s ...string) []netip.Prefix {
	t.Helper()
	ps, err := ParseProxyFrom(s)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// checkGoroutines fails t if the goroutine count does not come back to
// base after cleanup.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		eventually(t, 5*time.Second, "goroutines back to baseline", func() bool {
			return runtime.NumGoroutine() <= base
		})
	})
}

// ipv6Loopback reports whether [::1] can be listened on.
func ipv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
