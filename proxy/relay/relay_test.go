package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// mode says which of the relay's conns hide their socket, which picks
// the copier: splice (both sockets visible, Linux), buffer (the portable
// fallback, as for a conn from an upstream SOCKS dialer), or mixed (a visible
// client socket, an opaque target: waits for readability on one side only).
type mode struct {
	name                       string
	opaqueClient, opaqueTarget bool
}

var modes = []mode{
	{name: "splice"},
	{name: "buffer", opaqueClient: true, opaqueTarget: true},
	{name: "mixed", opaqueTarget: true},
}

// opaque hides the *net.TCPConn (its fd) from the relay, as a wrapper
// from an upstream dialer would, but still half-closes.
type opaque struct{ net.Conn }

func (o opaque) CloseWrite() error { return o.Conn.(*net.TCPConn).CloseWrite() }

// testTunnel is one tunnel under test. The test drives client and
// target (the far ends); Run owns clientSide and targetSide.
type testTunnel struct {
	client, target         *net.TCPConn
	clientSide, targetSide net.Conn
	cancel                 context.CancelCauseFunc
	done                   chan struct{} // closed when Run has returned res
	res                    Result
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// connPair returns both ends of a new loopback connection.
func connPair(t testing.TB, ln net.Listener) (dialed, accepted *net.TCPConn) {
	t.Helper()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// startTunnel starts r.Run on a new tunnel. Cleanup cancels it, waits for Run
// and closes the far ends.
func startTunnel(t testing.TB, r *Relay, ln net.Listener, m mode) *testTunnel {
	t.Helper()
	tt := &testTunnel{done: make(chan struct{})}
	var clientSide, targetSide *net.TCPConn
	tt.client, clientSide = connPair(t, ln)
	targetSide, tt.target = connPair(t, ln)
	tt.clientSide, tt.targetSide = clientSide, targetSide
	if m.opaqueClient {
		tt.clientSide = opaque{clientSide}
	}
	if m.opaqueTarget {
		tt.targetSide = opaque{targetSide}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	tt.cancel = cancel
	go func() {
		defer close(tt.done)
		tt.res = r.Run(ctx, tt.clientSide, tt.targetSide)
	}()
	t.Cleanup(func() {
		cancel(errors.New("test over"))
		select {
		case <-tt.done:
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
		tt.client.Close()
		tt.target.Close()
	})
	return tt
}

// wait returns Run's result, failing t if it takes longer than within.
func (tt *testTunnel) wait(t testing.TB, within time.Duration) Result {
	t.Helper()
	select {
	case <-tt.done:
		return tt.res
	case <-time.After(within):
		t.Fatalf("Run did not return within %v", within)
		return Result{}
	}
}

// eventually polls cond until it returns nil, failing t with cond's last
// error after within.
func eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countFDs counts this process's open fds by kind; ok is false without
// /proc/self/fd.
func countFDs() (total, pipes, sockets int, ok bool) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, 0, false
	}
	for _, e := range ents {
		dest, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own fd, already closed
		}
		total++
		switch {
		case strings.HasPrefix(dest, "pipe:"):
			pipes++
		case strings.HasPrefix(dest, "socket:"):
			sockets++
		}
	}
	return total, pipes, sockets, true
}

// checkLeaks fails t if goroutines or fds started during the test
// outlive it. Call it first, so that its cleanup runs last; it closes r's
// spare pipes, which are not a leak.
func checkLeaks(t *testing.T, r *Relay) {
	t.Helper()
	// Make sure the runtime's poller exists before counting its fds.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	g0 := runtime.NumGoroutine()
	fd0, _, _, haveFDs := countFDs()
	t.Cleanup(func() {
		r.getSpares().pipes.closeAll()
		eventually(t, 5*time.Second, func() error {
			if g := runtime.NumGoroutine(); g > g0 {
				return fmt.Errorf("%d goroutines, want <= %d", g, g0)
			}
			if fd, _, _, _ := countFDs(); haveFDs && fd > fd0 {
				return fmt.Errorf("%d open fds, want <= %d", fd, fd0)
			}
			return nil
		})
	})
}

// copierGoroutines counts the goroutines running a relay direction.
func copierGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "relay.(*copier).run(") || strings.Contains(g, "relay.(*parkDir).run(") {
			count++
		}
	}
	return count
}

// send writes size pseudo-random bytes (from seed) to c and returns
// their SHA-256.
func send(c net.Conn, seed byte, size int) ([32]byte, error) {
	rng := rand.NewChaCha8([32]byte{seed})
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for size > 0 {
		b := buf[:min(len(buf), size)]
		_, _ = rng.Read(b)
		h.Write(b)
		if _, err := c.Write(b); err != nil {
			return [32]byte{}, err
		}
		size -= len(b)
	}
	return [32]byte(h.Sum(nil)), nil
}

// receive reads c to EOF and returns the count and SHA-256.
func receive(c net.Conn) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	return n, [32]byte(h.Sum(nil)), err
}

func TestRelayVerbatim(t *testing.T) {
	const size = 64 << 20
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			var onUp, onDown atomic.Int64
			r := &Relay{OnBytes: func(up bool, n int64) {
				if up {
					onUp.Add(n)
				} else {
					onDown.Add(n)
				}
			}}
			checkLeaks(t, r)
			tt := startTunnel(t, r, listen(t), m)
			for _, c := range []*net.TCPConn{tt.client, tt.target} {
				c.SetDeadline(time.Now().Add(2 * time.Minute)) // fail, not hang
			}

			var wg sync.WaitGroup
			var sentUp, gotUp, sentDown, gotDown [32]byte
			var nUp, nDown int64
			upDone := make(chan struct{})
			wg.Go(func() {
				var err error
				if sentUp, err = send(tt.client, 1, size); err != nil {
					t.Errorf("client send: %v", err)
				}
				tt.client.CloseWrite()
			})
			wg.Go(func() {
				defer close(upDone)
				var err error
				if nUp, gotUp, err = receive(tt.target); err != nil {
					t.Errorf("target receive: %v", err)
				}
			})
			wg.Go(func() {
				var err error
				if sentDown, err = send(tt.target, 2, size); err != nil {
					t.Errorf("target send: %v", err)
				}
				<-upDone // so that the client is known to close first
				tt.target.CloseWrite()
			})
			wg.Go(func() {
				var err error
				if nDown, gotDown, err = receive(tt.client); err != nil {
					t.Errorf("client receive: %v", err)
				}
			})
			wg.Wait()

			if nUp != size || gotUp != sentUp {
				t.Errorf("up: target got %d bytes, sha256 %x; want %d, %x", nUp, gotUp[:8], size, sentUp[:8])
			}
			if nDown != size || gotDown != sentDown {
				t.Errorf("down: client got %d bytes, sha256 %x; want %d, %x", nDown, gotDown[:8], size, sentDown[:8])
			}
			res := tt.wait(t, 10*time.Second)
			want := Result{Up: size, Down: size, Reason: EndClientClosed}
			if res != want {
				t.Errorf("Run = %+v; want %+v", res, want)
			}
			if onUp.Load() != res.Up || onDown.Load() != res.Down {
				t.Errorf("OnBytes totals up %d, down %d; want %d, %d", onUp.Load(), onDown.Load(), res.Up, res.Down)
			}
		})
	}
}

func TestRelayHalfClose(t *testing.T) {
	const replySize = 4 << 20
	for _, m := range modes {
		for _, clientFirst := range []bool{true, false} {
			name, wantReason := m.name+"/client_first", EndClientClosed
			if !clientFirst {
				name, wantReason = m.name+"/target_first", EndTargetClosed
			}
			t.Run(name, func(t *testing.T) {
				r := &Relay{}
				checkLeaks(t, r)
				tt := startTunnel(t, r, listen(t), m)
				first, second := tt.client, tt.target
				if !clientFirst {
					first, second = second, first
				}
				for _, c := range []*net.TCPConn{first, second} {
					c.SetDeadline(time.Now().Add(20 * time.Second)) // fail, not hang
				}

				// first sends a request and ends its write half: second
				// sees exactly the request, then EOF.
				if _, err := first.Write([]byte("request")); err != nil {
					t.Fatal(err)
				}
				if err := first.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if got, err := io.ReadAll(second); string(got) != "request" || err != nil {
					t.Fatalf("far end read %q, %v; want %q, nil", got, err, "request")
				}

				// The other direction still flows, then ends the same way.
				type received struct {
					n   int64
					sum [32]byte
					err error
				}
				got := make(chan received, 1)
				go func() {
					n, sum, err := receive(first)
					got <- received{n, sum, err}
				}()
				sent, err := send(second, 3, replySize)
				if err != nil {
					t.Fatalf("reply: %v", err)
				}
				if err := second.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if g := <-got; g.n != replySize || g.sum != sent || g.err != nil {
					t.Errorf("reply: got %d bytes, match %v, %v; want %d, true, nil", g.n, g.sum == sent, g.err, replySize)
				}

				res := tt.wait(t, 5*time.Second)
				want := Result{Up: 7, Down: replySize, Reason: wantReason}
				if !clientFirst {
					want.Up, want.Down = replySize, 7
				}
				if res != want {
					t.Errorf("Run = %+v; want %+v", res, want)
				}
				for _, c := range []net.Conn{tt.clientSide, tt.targetSide} {
					if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
						t.Errorf("relay's conn after Run: Write error %v; want net.ErrClosed", err)
					}
				}
			})
		}
	}
}

// reset aborts c: the peer gets a RST, not a FIN.
func reset(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// expectClosed fails t unless c's peer closes within a few seconds.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		_, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("conn not closed by the relay within 5s")
		}
		if err != nil {
			return // EOF or reset: closed
		}
	}
}

func TestRelayReset(t *testing.T) {
	for _, m := range modes {
		for _, side := range []string{"client", "target"} {
			for _, busy := range []bool{false, true} {
				name := m.name + "/" + side
				if busy {
					name += "/busy"
				}
				t.Run(name, func(t *testing.T) {
					r := &Relay{}
					checkLeaks(t, r)
					tt := startTunnel(t, r, listen(t), m)
					victim, other, want := tt.client, tt.target, EndClientReset
					if side == "target" {
						victim, other, want = tt.target, tt.client, EndTargetReset
					}
					if busy {
						// other streams at victim, which reads some, then resets.
						go func() {
							buf := make([]byte, 64<<10)
							for {
								if _, err := other.Write(buf); err != nil {
									return
								}
							}
						}()
						if _, err := io.ReadFull(victim, make([]byte, 1<<20)); err != nil {
							t.Fatal(err)
						}
					}
					reset(t, victim)
					res := tt.wait(t, 5*time.Second)
					if res.Reason != want || !errors.Is(res.Err, syscall.ECONNRESET) && !errors.Is(res.Err, syscall.EPIPE) {
						t.Errorf("Run = %+v; want reason %s and a reset error", res, want)
					}
					expectClosed(t, other)
				})
			}
		}
	}
}

func TestRelayCancel(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := &Relay{}
			checkLeaks(t, r)
			tt := startTunnel(t, r, listen(t), m)
			if _, err := tt.client.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(tt.target, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
			cause := errors.New("server shutting down")
			tt.cancel(cause)
			res := tt.wait(t, 5*time.Second)
			want := Result{Up: 2, Reason: EndCanceled, Err: cause}
			if res != want {
				t.Errorf("Run = %+v; want %+v", res, want)
			}
			expectClosed(t, tt.client)
			expectClosed(t, tt.target)
		})
	}
	t.Run("already_done", func(t *testing.T) {
		r := &Relay{}
		checkLeaks(t, r)
		ln := listen(t)
		far1, a := connPair(t, ln)
		b, far2 := connPair(t, ln)
		defer far1.Close()
		defer far2.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res := r.Run(ctx, a, b)
		if res.Reason != EndCanceled || !errors.Is(res.Err, context.Canceled) {
			t.Errorf("Run = %+v; want reason %s, context.Canceled", res, EndCanceled)
		}
	})
}

const testIdle = 200 * time.Millisecond

func TestRelayIdleTimeout(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name+"/quiet", func(t *testing.T) {
			r := &Relay{IdleTimeout: testIdle}
			checkLeaks(t, r)
			start := time.Now()
			tt := startTunnel(t, r, listen(t), m)
			res := tt.wait(t, 5*time.Second)
			if elapsed := time.Since(start); elapsed < testIdle {
				t.Errorf("ended after %v; want >= %v", elapsed, testIdle)
			}
			if res.Reason != EndIdleTimeout || !errors.Is(res.Err, os.ErrDeadlineExceeded) {
				t.Errorf("Run = %+v; want reason %s, os.ErrDeadlineExceeded", res, EndIdleTimeout)
			}
			expectClosed(t, tt.client)
		})

		// Traffic one way only, for 5 timeouts: the quiet direction must
		// not end the tunnel.
		for _, up := range []bool{true, false} {
			name := m.name + "/active_up_only"
			if !up {
				name = m.name + "/active_down_only"
			}
			t.Run(name, func(t *testing.T) {
				r := &Relay{IdleTimeout: testIdle}
				checkLeaks(t, r)
				ln := listen(t)
				// The timing claim holds only if the test itself sent
				// often enough; on a loaded machine a stall of the whole
				// process can starve the sender, so such a run is retried.
				const attempts = 5
				for i := 1; !oneWayActive(t, r, ln, m, up); i++ {
					if i == attempts {
						t.Skipf("inconclusive: the test process stalled for > %v in each of %d attempts", testIdle/2, attempts)
					}
				}
			})
		}

		// A peer that stops reading: the writes block and nothing moves,
		// which is idleness too.
		t.Run(m.name+"/blocked_writer", func(t *testing.T) {
			r := &Relay{IdleTimeout: testIdle}
			checkLeaks(t, r)
			tt := startTunnel(t, r, listen(t), m)
			go func() {
				buf := make([]byte, 64<<10)
				for {
					if _, err := tt.client.Write(buf); err != nil {
						return
					}
				}
			}()
			res := tt.wait(t, 20*time.Second)
			if res.Reason != EndIdleTimeout || res.Up == 0 {
				t.Errorf("Run = %+v; want reason %s after some bytes up", res, EndIdleTimeout)
			}
		})
	}
}

// oneWayActive sends a byte one way every IdleTimeout/5 for 5 timeouts
// and checks that the tunnel lives through it and then ends idle. It reports
// false (inconclusive) when the test itself was stalled for half a timeout.
func oneWayActive(t *testing.T, r *Relay, ln net.Listener, m mode, up bool) bool {
	t.Helper()
	tt := startTunnel(t, r, ln, m)
	sender, receiver := tt.client, tt.target
	if !up {
		sender, receiver = receiver, sender
	}
	received := make(chan int, 1)
	go func() {
		n, _ := io.Copy(io.Discard, receiver)
		received <- int(n)
	}()
	tick := time.NewTicker(testIdle / 5)
	defer tick.Stop()
	sends, last, maxGap := 0, time.Now(), time.Duration(0)
	endedEarly := false
	for end := last.Add(5 * testIdle); last.Before(end) && !endedEarly; {
		select {
		case <-tt.done:
			endedEarly = true
		case <-tick.C:
			// Stamped before the write: the relay may move the byte before
			// Write returns here.
			now := time.Now()
			if _, err := sender.Write([]byte{'x'}); err != nil {
				endedEarly = true
				break
			}
			sends++
			maxGap = max(maxGap, now.Sub(last))
			last = now
		}
	}
	res := tt.wait(t, 5*time.Second)
	quiet := time.Since(last)
	if endedEarly || quiet < testIdle {
		if maxGap > testIdle/2 {
			t.Logf("inconclusive: the sender stalled for %v; retrying", maxGap)
			return false
		}
		t.Fatalf("tunnel ended %v after the last byte while one direction was active (longest gap between sends %v): %+v", quiet, maxGap, res)
	}
	if res.Reason != EndIdleTimeout || !errors.Is(res.Err, os.ErrDeadlineExceeded) {
		t.Errorf("Run = %+v; want reason %s, os.ErrDeadlineExceeded", res, EndIdleTimeout)
	}
	if got := <-received; got != sends {
		t.Errorf("receiver got %d bytes; want %d", got, sends)
	}
	return true
}

// Run must clear deadlines left over from the handshake.
func TestRelayClearsStaleDeadlines(t *testing.T) {
	r := &Relay{}
	checkLeaks(t, r)
	ln := listen(t)
	client, clientSide := connPair(t, ln)
	targetSide, target := connPair(t, ln)
	defer client.Close()
	defer target.Close()
	clientSide.SetDeadline(time.Now().Add(-time.Second))
	targetSide.SetDeadline(time.Now().Add(-time.Second))
	done := make(chan Result, 1)
	go func() { done <- r.Run(context.Background(), clientSide, targetSide) }()
	client.Write([]byte("ping"))
	target.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(target, got); err != nil || !bytes.Equal(got, []byte("ping")) {
		t.Fatalf("target read %q, %v; want ping", got, err)
	}
	client.CloseWrite()
	if rest, err := io.ReadAll(target); len(rest) != 0 || err != nil {
		t.Fatalf("target read %q, %v after the client's EOF; want EOF", rest, err)
	}
	target.CloseWrite()
	select {
	case res := <-done:
		if want := (Result{Up: 4, Reason: EndClientClosed}); res != want {
			t.Errorf("Run = %+v; want %+v", res, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

// An idle tunnel must hold its two sockets and nothing else: no pipe, no
// extra fd; and no goroutine when parked (Linux, both sockets visible), else
// exactly two. Parked tunnels share the Relay's epoll fd and eventfd.
func TestRelayIdleTunnelsHoldOnlyTheirSockets(t *testing.T) {
	if _, _, _, ok := countFDs(); !ok {
		t.Skip("no /proc/self/fd")
	}
	const n = 50
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := &Relay{IdleTimeout: time.Hour} // deadlines armed, as in production
			checkLeaks(t, r)
			ln := listen(t)
			total0, pipes0, sockets0, _ := countFDs()
			// A message each way larger than a buffer, so that every copier
			// has had a buffer and (splice path) a pipe, and given them back.
			msg, got := make([]byte, 256<<10), make([]byte, 256<<10)
			for range n {
				tt := startTunnel(t, r, ln, m)
				for _, p := range [][2]*net.TCPConn{{tt.client, tt.target}, {tt.target, tt.client}} {
					errc := make(chan error, 1)
					go func() {
						_, err := p[0].Write(msg)
						errc <- err
					}()
					if _, err := io.ReadFull(p[1], got); err != nil {
						t.Fatal(err)
					}
					if err := <-errc; err != nil {
						t.Fatal(err)
					}
				}
			}
			eventually(t, 5*time.Second, func() error {
				total, pipes, sockets, _ := countFDs()
				spare := r.getSpares().pipes.spare()
				if m.name == "splice" && runtime.GOOS == "linux" && spare == 0 {
					return fmt.Errorf("no spare pipe after bulk through %d tunnels: the splice path was not used", n)
				}
				if got, want := pipes-pipes0, 2*spare; got != want {
					return fmt.Errorf("%d new pipe fds, want %d (the Relay's %d spare pipes): an idle tunnel holds a pipe", got, want, spare)
				}
				if got, want := sockets-sockets0, 4*n; got != want {
					return fmt.Errorf("%d new sockets, want %d (2 far ends + 2 relay conns per tunnel)", got, want)
				}
				parked := m.name == "splice" && runtime.GOOS == "linux"
				shared, perTunnel := 0, 2
				if parked {
					shared, perTunnel = r.getSpares().park.fds(), 0
				}
				if got, want := total-total0, 4*n+2*spare+shared; got != want {
					return fmt.Errorf("%d new fds, want %d", got, want)
				}
				if got, want := copierGoroutines(), perTunnel*n; got != want {
					return fmt.Errorf("%d goroutines in the relay, want %d (%d per tunnel)", got, want, perTunnel)
				}
				return nil
			})
		})
	}
}

// TestRelayPanicEndsTunnel: a panic while copying (here in OnBytes, in
// either direction) ends the tunnel with EndPanic, on every path, instead
// of crashing the process.
func TestRelayPanicEndsTunnel(t *testing.T) {
	ln := listen(t)
	for _, m := range modes {
		for _, up := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/up=%v", m.name, up), func(t *testing.T) {
				r := &Relay{OnBytes: func(u bool, _ int64) {
					if u == up {
						panic("boom")
					}
				}}
				tt := startTunnel(t, r, ln, m)
				src := tt.target
				if up {
					src = tt.client
				}
				if _, err := src.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				res := tt.wait(t, 10*time.Second)
				if res.Reason != EndPanic || res.Err == nil {
					t.Fatalf("Reason = %q, Err = %v; want %q with the panic", res.Reason, res.Err, EndPanic)
				}
			})
		}
	}
}
