package relay

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// stalledSend writes size bytes (from seed) to c in the background; the
// channel gets the SHA-256 or the error once the write is done.
func stalledSend(c net.Conn, seed byte, size int) chan sendResult {
	ch := make(chan sendResult, 1)
	go func() {
		sum, err := send(c, seed, size)
		ch <- sendResult{sum, err}
	}()
	return ch
}

type sendResult struct {
	sum [32]byte
	err error
}

// A tunnel whose peers both stopped reading while the other side sends
// holds its two sockets and nothing else: no pipe (the bytes a pipe held
// wait in buffers), so that the default --max-tunnels (2 fds per tunnel)
// holds even with every tunnel stalled both ways. Once the peers read
// again, every byte arrives, in order.
func TestRelayStalledTunnelsHoldOnlyTheirSockets(t *testing.T) {
	if _, _, _, ok := countFDs(); !ok {
		t.Skip("no /proc/self/fd")
	}
	const n, size = 20, 4 << 20 // far more than socket buffers and a pipe hold
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := &Relay{IdleTimeout: time.Hour, WriteTimeout: time.Hour}
			checkLeaks(t, r)
			ln := listen(t)
			total0, pipes0, _, _ := countFDs()
			tts := make([]*testTunnel, n)
			ups, downs := make([]chan sendResult, n), make([]chan sendResult, n)
			for i := range n {
				tts[i] = startTunnel(t, r, ln, m)
				// Small socket buffers, so that a few MiB are sure to stall.
				for _, c := range []net.Conn{tts[i].client, tts[i].target, tts[i].clientSide, tts[i].targetSide} {
					tc, _ := c.(*net.TCPConn)
					if o, ok := c.(opaque); ok {
						tc = o.Conn.(*net.TCPConn)
					}
					_ = tc.SetReadBuffer(64 << 10)
					_ = tc.SetWriteBuffer(64 << 10)
				}
				ups[i] = stalledSend(tts[i].client, byte(2*i), size)
				downs[i] = stalledSend(tts[i].target, byte(2*i+1), size)
			}
			parked := m.name == "splice" && runtime.GOOS == "linux"
			eventually(t, 10*time.Second, func() error {
				total, pipes, _, _ := countFDs()
				spare := r.getSpares().pipes.spare()
				if pipes-pipes0 != 2*spare {
					return fmt.Errorf("%d new pipe fds, want %d (the Relay's %d spare pipes): a stalled direction holds a pipe", pipes-pipes0, 2*spare, spare)
				}
				shared := 0
				if parked {
					shared = r.getSpares().park.fds() // the loops' epoll fds and eventfds
				}
				// The test's own far ends are 2 per tunnel.
				relayFDs := total - total0 - 2*n - 2*spare - shared
				if relayFDs != 2*n {
					return fmt.Errorf("the relay holds %d fds for %d stalled tunnels, want %d (2 per tunnel)", relayFDs, n, 2*n)
				}
				if got, want := copierGoroutines(), 2*n; got != want {
					return fmt.Errorf("%d directions running, want %d: not all stalled yet", got, want)
				}
				return nil
			})
			for i, c := range ups {
				select {
				case res := <-c:
					t.Fatalf("tunnel %d: the sender finished (%v) while nobody read", i, res.err)
				default:
				}
			}
			// Resume: every byte arrives, in order.
			for i, tt := range tts {
				for _, p := range []struct {
					sent chan sendResult
					to   *net.TCPConn
				}{{ups[i], tt.target}, {downs[i], tt.client}} {
					got := make(chan sendResult, 1)
					go func() {
						h := newHashReader(p.to, size)
						sum, err := h.sum()
						got <- sendResult{sum, err}
					}()
					var sent, recv sendResult
					select {
					case sent = <-p.sent:
					case <-time.After(30 * time.Second):
						t.Fatalf("tunnel %d: the sender is still blocked 30s after its peer resumed reading", i)
					}
					if sent.err != nil {
						t.Fatal(sent.err)
					}
					select {
					case recv = <-got:
					case <-time.After(30 * time.Second):
						t.Fatalf("tunnel %d: the reader did not finish", i)
					}
					if recv.err != nil || recv.sum != sent.sum {
						t.Fatalf("tunnel %d: received %x (%v), sent %x", i, recv.sum, recv.err, sent.sum)
					}
				}
			}
		})
	}
}

// A destination that accepts no byte for WriteTimeout while bytes wait
// ends the tunnel with EndWriteTimeout; one that reads slowly but keeps
// reading does not.
func TestRelayWriteTimeout(t *testing.T) {
	const wt = 300 * time.Millisecond
	for _, m := range modes {
		for _, up := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/stalled/up=%v", m.name, up), func(t *testing.T) {
				r := &Relay{WriteTimeout: wt}
				checkLeaks(t, r)
				tt := startTunnel(t, r, listen(t), m)
				src := tt.target
				if up {
					src = tt.client
				}
				start := time.Now()
				sent := stalledSend(src, 1, 64<<20)
				res := tt.wait(t, 20*time.Second)
				if elapsed := time.Since(start); elapsed < wt {
					t.Errorf("ended after %v; want >= %v", elapsed, wt)
				}
				var wte *writeTimeoutError
				if res.Reason != EndWriteTimeout || !errors.As(res.Err, &wte) || !errors.Is(res.Err, os.ErrDeadlineExceeded) {
					t.Errorf("Run = %+v; want reason %s", res, EndWriteTimeout)
				}
				if res.Up+res.Down == 0 {
					t.Errorf("Run = %+v; want some bytes moved before the stall", res)
				}
				expectClosed(t, tt.client)
				expectClosed(t, tt.target)
				<-sent
			})
		}
		t.Run(m.name+"/slow_reader", func(t *testing.T) {
			r := &Relay{WriteTimeout: wt}
			checkLeaks(t, r)
			tt := startTunnel(t, r, listen(t), m)
			const size = 2 << 20
			sent := stalledSend(tt.target, 7, size)
			h := newHashReader(tt.client, size)
			h.pause = wt / 6 // reads 64 KiB per pause: slow, never stalled
			sum, err := h.sum()
			if err != nil {
				t.Fatalf("slow reader: %v (tunnel: %+v)", err, tt.res)
			}
			s := <-sent
			if s.err != nil || s.sum != sum {
				t.Fatalf("received %x, sent %x (%v)", sum, s.sum, s.err)
			}
		})
	}
}

// hashReader reads exactly size bytes and hashes them, pausing between
// reads if asked.
type hashReader struct {
	c     net.Conn
	size  int
	pause time.Duration
}

func newHashReader(c net.Conn, size int) *hashReader { return &hashReader{c: c, size: size} }

func (h *hashReader) sum() ([32]byte, error) {
	hw := newSHA()
	buf := make([]byte, 64<<10)
	for left := h.size; left > 0; {
		_ = h.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := h.c.Read(buf[:min(len(buf), left)])
		hw.Write(buf[:n])
		left -= n
		if err != nil && (err != io.EOF || left > 0) {
			return [32]byte{}, err
		}
		if h.pause > 0 {
			time.Sleep(h.pause)
		}
	}
	return [32]byte(hw.Sum(nil)), nil
}

func newSHA() hash.Hash { return sha256.New() }
