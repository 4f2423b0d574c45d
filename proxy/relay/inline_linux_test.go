//go:build linux

package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// genFrames returns count frames of 1..maxSize pseudo-random bytes (from
// seed).
func genFrames(seed uint64, count, maxSize int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	fs := make([][]byte, count)
	for i := range fs {
		fs[i] = make([]byte, 1+rng.IntN(maxSize))
		for j := range fs[i] {
			fs[i][j] = byte(rng.Uint32())
		}
	}
	return fs
}

// writeFrames writes each frame with a write of its own and returns them
// joined.
func writeFrames(c net.Conn, fs [][]byte) ([]byte, error) {
	for _, f := range fs {
		if _, err := c.Write(f); err != nil {
			return nil, err
		}
	}
	return bytes.Join(fs, nil), nil
}

// frames writes count generated frames to c and returns them joined.
func frames(c net.Conn, seed uint64, count, maxSize int) ([]byte, error) {
	return writeFrames(c, genFrames(seed, count, maxSize))
}

// readN reads exactly n bytes from c within 10 s.
func readN(c net.Conn, n int) ([]byte, error) {
	got := make([]byte, n)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadFull(c, got)
	return got, err
}

// Many small frames both ways, over several tunnels at once (and so over
// every loop), arrive byte-exact, and none of them needs a goroutine: the
// loops move them inline. Each tunnel plays ping-pong, so that frames do not
// pile up into a full buffer (which the relay takes for bulk).
func TestRelayInlineSmallFramesBothWays(t *testing.T) {
	const tunnels, rounds, maxSize = 8, 300, 1500
	r := &Relay{}
	checkLeaks(t, r)
	ln := listen(t)
	h0 := r.getSpares().park.handoffs.Load()
	var wg sync.WaitGroup
	errc := make(chan error, tunnels)
	for i := range tunnels {
		tt := parkStart(t, r, ln, nil)
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 2))
			for k := range rounds {
				for _, p := range [][2]*net.TCPConn{{tt.client, tt.target}, {tt.target, tt.client}} {
					f := make([]byte, 1+rng.IntN(maxSize))
					for j := range f {
						f[j] = byte(rng.Uint32())
					}
					if _, err := p[0].Write(f); err != nil {
						errc <- err
						return
					}
					got, err := readN(p[1], len(f))
					if err != nil || !bytes.Equal(got, f) {
						errc <- fmt.Errorf("tunnel %d round %d: got %d bytes (%v), not the %d sent", i, k, len(got), err, len(f))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if h := r.getSpares().park.handoffs.Load() - h0; h != 0 {
		t.Errorf("%d hand-offs to goroutines for small frames to readers that keep up; want 0", h)
	}
	parkWaitIdle(t)
}

// Small frames written back to back both ways at once, faster than the
// relay may move them one by one (so some reads fill the buffer and take
// the bulk path): every byte arrives in order.
func TestRelayInlineFramesStreamedBothWays(t *testing.T) {
	const tunnels, count, maxSize = 8, 2000, 1500
	r := &Relay{}
	checkLeaks(t, r)
	ln := listen(t)
	var wg sync.WaitGroup
	errc := make(chan error, 2*tunnels)
	for i := range tunnels {
		tt := parkStart(t, r, ln, nil)
		for d, p := range [][2]*net.TCPConn{{tt.client, tt.target}, {tt.target, tt.client}} {
			fs := genFrames(uint64(2*i+d), count, maxSize)
			want := bytes.Join(fs, nil)
			wg.Go(func() {
				_ = p[0].SetWriteDeadline(time.Now().Add(60 * time.Second)) // a failed reader fails the test, not hangs it
				if _, err := writeFrames(p[0], fs); err != nil {
					errc <- err
				}
			})
			wg.Go(func() {
				got, err := readN(p[1], len(want))
				if err != nil || !bytes.Equal(got, want) {
					errc <- fmt.Errorf("tunnel %d: %v, or the bytes differ from the %d sent", i, err, len(want))
				}
			})
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	parkWaitIdle(t)
}

// A frame whose write would block (the target does not read) moves to a
// goroutine with the rest of the frame; once the target reads again every
// byte arrives in order, and the direction returns to its loop.
func TestRelayInlineBlockedWriteMovesToGoroutine(t *testing.T) {
	r := &Relay{}
	checkLeaks(t, r)
	ln := listen(t)
	tt := parkStart(t, r, ln, nil)
	for _, c := range []*net.TCPConn{tt.target, tt.targetSide} {
		_ = c.SetReadBuffer(32 << 10) // so that a few hundred KiB block
		_ = c.SetWriteBuffer(32 << 10)
	}
	h0 := r.getSpares().park.handoffs.Load()
	fs := genFrames(42, 2000, 1000) // ~1 MB in small frames
	want := bytes.Join(fs, nil)
	go func() { _, _ = writeFrames(tt.client, fs) }()
	eventually(t, 10*time.Second, func() error {
		if h := r.getSpares().park.handoffs.Load() - h0; h == 0 {
			return errors.New("no hand-off yet while the target does not read")
		}
		return nil
	})
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	for got.Len() < len(want) {
		_ = tt.target.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := tt.target.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("after %d bytes: %v", got.Len(), err)
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("%d bytes received differ from the %d sent", got.Len(), len(want))
	}
	parkWaitIdle(t) // back in the loop
	if err := parkEcho(tt, []byte("after")); err != nil {
		t.Fatal(err)
	}
}

// Bulk through one tunnel beside small frames through others: both arrive
// byte-exact, and the small frames are answered while the bulk flows.
func TestRelayInlineBulkBesideSmallFrames(t *testing.T) {
	const size = 64 << 20
	r := &Relay{}
	checkLeaks(t, r)
	ln := listen(t)
	bulk := parkStart(t, r, ln, nil)
	small := make([]*parkedTestTunnel, 4)
	for i := range small {
		small[i] = parkStart(t, r, ln, nil)
	}
	type sum struct {
		n   int64
		sum [32]byte
		err error
	}
	sentc, gotc := make(chan sum, 1), make(chan sum, 1)
	go func() {
		s, err := send(bulk.client, 9, size)
		_ = bulk.client.CloseWrite()
		sentc <- sum{size, s, err}
	}()
	go func() {
		n, s, err := receive(bulk.target)
		gotc <- sum{n, s, err}
	}()
	echoes := 0
	deadline := time.Now().Add(60 * time.Second)
	for done := false; !done; {
		if time.Now().After(deadline) {
			t.Fatalf("the bulk did not arrive within 60s (%d rounds of small frames meanwhile)", echoes)
		}
		select {
		case got := <-gotc:
			sent := <-sentc
			if got.err != nil || sent.err != nil || got != sent {
				t.Fatalf("bulk: received %d bytes %x (%v), sent %x (%v)", got.n, got.sum, got.err, sent.sum, sent.err)
			}
			done = true
		default:
			for i, tt := range small {
				if err := parkEcho(tt, []byte(fmt.Sprintf("frame %d/%d", echoes, i))); err != nil {
					t.Fatal(err)
				}
			}
			echoes++
		}
	}
	t.Logf("%d rounds of small frames during %d MiB of bulk", echoes, size>>20)
	if echoes < 2 {
		t.Errorf("only %d rounds of small frames while the bulk flowed", echoes)
	}
}

// Frames followed at once by the client's EOF: everything arrives, then the
// EOF, while the other direction keeps flowing; the tunnel ends cleanly.
func TestRelayInlineHalfClose(t *testing.T) {
	r := &Relay{}
	checkLeaks(t, r)
	tt := parkStart(t, r, listen(t), nil)
	sent, err := frames(tt.client, 5, 50, 500)
	if err != nil {
		t.Fatal(err)
	}
	if err := tt.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = tt.target.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(tt.target)
	if err != nil || !bytes.Equal(got, sent) {
		t.Fatalf("target read %d bytes (%v); want the %d sent, then EOF", len(got), err, len(sent))
	}
	reply, err := frames(tt.target, 6, 50, 500)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := readN(tt.client, len(reply)); err != nil || !bytes.Equal(back, reply) {
		t.Fatalf("client read %v; want the reply", err)
	}
	_ = tt.target.CloseWrite()
	res := tt.wait(t, 5*time.Second)
	want := Result{Up: int64(len(sent)), Down: int64(len(reply)), Reason: EndClientClosed}
	if res != want {
		t.Errorf("res = %+v; want %+v", res, want)
	}
	if n := tt.calls.Load(); n != 1 {
		t.Errorf("done called %d times", n)
	}
}

// Cancel while a loop is in the middle of moving a direction (here held in
// OnBytes, which the loop calls): the tunnel ends canceled, once, after the
// loop lets go, and the loop goes on serving other tunnels.
func TestRelayInlineCancelWhileLoopHolds(t *testing.T) {
	in, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var hold sync.Mutex
	holding := true
	r := &Relay{OnBytes: func(up bool, n int64) {
		hold.Lock()
		h := holding
		hold.Unlock()
		if h {
			once.Do(func() { close(in) })
			<-release
		}
	}}
	checkLeaks(t, r)
	ln := listen(t)
	tt := parkStart(t, r, ln, nil)
	if _, err := tt.client.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-in:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop never moved the frame")
	}
	cause := errors.New("shutting down")
	tt.cancel(cause)
	select {
	case res := <-tt.done:
		t.Fatalf("done (%+v) while the loop still held the direction", res)
	case <-time.After(50 * time.Millisecond):
	}
	hold.Lock()
	holding = false
	hold.Unlock()
	close(release)
	res := tt.wait(t, 5*time.Second)
	if res.Reason != EndCanceled || !errors.Is(res.Err, cause) || res.Up != 4 {
		t.Errorf("res = %+v; want canceled after 4 bytes up", res)
	}
	expectClosed(t, tt.client)
	// The loops still serve new tunnels.
	other := parkStart(t, r, ln, nil)
	if err := parkEcho(other, []byte("still")); err != nil {
		t.Fatal(err)
	}
	if n := tt.calls.Load(); n != 1 {
		t.Errorf("done called %d times", n)
	}
}
