//go:build linux

package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// parkedTestTunnel is a tunnel started with Relay.Start on the parked path.
type parkedTestTunnel struct {
	client, target         *net.TCPConn // the far ends, driven by the test
	clientSide, targetSide *net.TCPConn
	cancel                 context.CancelCauseFunc
	calls                  atomic.Int32
	done                   chan Result
}

// parkStart starts a tunnel with Start. Bytes in pre are sent by the client
// before Start, so they are in the socket when it is registered.
func parkStart(t testing.TB, r *Relay, ln net.Listener, pre []byte) *parkedTestTunnel {
	t.Helper()
	tt := &parkedTestTunnel{done: make(chan Result, 2)}
	tt.client, tt.clientSide = connPair(t, ln)
	tt.targetSide, tt.target = connPair(t, ln)
	if len(pre) > 0 {
		if _, err := tt.client.Write(pre); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	tt.cancel = cancel
	r.Start(ctx, tt.clientSide, tt.targetSide, func(res Result) {
		tt.calls.Add(1)
		tt.done <- res
	})
	t.Cleanup(func() {
		cancel(errors.New("test over"))
		tt.client.Close()
		tt.target.Close()
	})
	return tt
}

func (tt *parkedTestTunnel) wait(t testing.TB, within time.Duration) Result {
	t.Helper()
	select {
	case res := <-tt.done:
		return res
	case <-time.After(within):
		t.Fatalf("done not called within %v", within)
		return Result{}
	}
}

// parkWaitIdle waits until no relay direction is running: every tunnel is
// parked.
func parkWaitIdle(t testing.TB) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		if g := copierGoroutines(); g != 0 {
			return fmt.Errorf("%d relay goroutines, want 0 (all parked)", g)
		}
		return nil
	})
}

// parkEcho reads and writes back msg through the tunnel, up then down.
func parkEcho(tt *parkedTestTunnel, msg []byte) error {
	got := make([]byte, len(msg))
	for _, p := range [][2]*net.TCPConn{{tt.client, tt.target}, {tt.target, tt.client}} {
		if _, err := p[0].Write(msg); err != nil {
			return err
		}
		p[1].SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(p[1], got); err != nil {
			return err
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("got %q, want %q", got, msg)
		}
	}
	return nil
}

func TestRelayParkDoneOnce(t *testing.T) {
	r := &Relay{}
	checkLeaks(t, r)
	ln := listen(t)
	tts := make([]*parkedTestTunnel, 20)
	for i := range tts {
		tts[i] = parkStart(t, r, ln, nil)
	}
	// Every way of ending at once: a clean close, a reset and a cancel race
	// for the same tunnel.
	for _, tt := range tts {
		go tt.client.CloseWrite()
		go tt.target.CloseWrite()
		go tt.cancel(errors.New("racing"))
		go func() {
			tt.target.SetLinger(0)
			tt.target.Close()
		}()
	}
	for _, tt := range tts {
		tt.wait(t, 5*time.Second)
	}
	// Once the parker and all directions are gone, nothing can call done.
	eventually(t, 5*time.Second, func() error {
		if r.getSpares().park.running() {
			return errors.New("parker still running")
		}
		return nil
	})
	for i, tt := range tts {
		if n := tt.calls.Load(); n != 1 {
			t.Errorf("tunnel %d: done called %d times, want 1", i, n)
		}
	}
}

// 200 idle tunnels hold no goroutine and no pipe: one goroutine (the
// parker's) and its two fds for all of them.
func TestRelayParkIdleHoldsNoGoroutine(t *testing.T) {
	const n = 200
	r := &Relay{IdleTimeout: time.Hour}
	checkLeaks(t, r)
	ln := listen(t)
	g0 := runtime.NumGoroutine()
	_, pipes0, _, haveFDs := countFDs()
	msg := bytes.Repeat([]byte("x"), 100<<10) // bulk: borrows a pipe
	tts := make([]*parkedTestTunnel, n)
	for i := range tts {
		tts[i] = parkStart(t, r, ln, nil)
		if err := parkEcho(tts[i], msg); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, func() error {
		loops := r.getSpares().park.fds() / 2
		if g, want := runtime.NumGoroutine(), g0+loops; g > want {
			return fmt.Errorf("%d goroutines, want <= %d (baseline + %d loops)", g, want, loops)
		}
		if !r.getSpares().park.running() {
			return errors.New("parker not running")
		}
		if _, pipes, _, _ := countFDs(); haveFDs && pipes-pipes0 != 2*r.getSpares().pipes.spare() {
			return fmt.Errorf("%d new pipe fds, want %d (spares only)", pipes-pipes0, 2*r.getSpares().pipes.spare())
		}
		return nil
	})
	for _, tt := range tts {
		tt.cancel(errors.New("done"))
	}
	for _, tt := range tts {
		if res := tt.wait(t, 5*time.Second); res.Reason != EndCanceled {
			t.Errorf("res = %+v; want canceled", res)
		}
	}
}

func TestRelayParkWakeUp(t *testing.T) {
	r := &Relay{}
	checkLeaks(t, r)
	ln := listen(t)
	// Bytes already in the socket when the tunnel is registered.
	tt := parkStart(t, r, ln, []byte("early"))
	got := make([]byte, 5)
	tt.target.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(tt.target, got); err != nil || string(got) != "early" {
		t.Fatalf("target read %q, %v; want early", got, err)
	}
	parkWaitIdle(t)
	for i := range 5 {
		if err := parkEcho(tt, []byte(fmt.Sprintf("after idle %d", i))); err != nil {
			t.Fatal(err)
		}
		parkWaitIdle(t)
	}
	// A bulk burst both ways after idling, then a clean end.
	const size = 8 << 20
	var wg sync.WaitGroup
	for _, p := range [][2]*net.TCPConn{{tt.client, tt.target}, {tt.target, tt.client}} {
		wg.Go(func() {
			if _, err := send(p[0], 7, size); err != nil {
				t.Error(err)
			}
			p[0].CloseWrite()
		})
		wg.Go(func() {
			n, _, err := receive(p[1])
			if n != size || err != nil {
				t.Errorf("received %d, %v; want %d", n, err, size)
			}
		})
	}
	wg.Wait()
	res := tt.wait(t, 5*time.Second)
	if res.Up != size+5+5*12 || res.Down != size+5*12 || (res.Reason != EndClientClosed && res.Reason != EndTargetClosed) {
		t.Errorf("res = %+v", res)
	}
}

func TestRelayParkHalfCloseWhileParked(t *testing.T) {
	r := &Relay{}
	checkLeaks(t, r)
	tt := parkStart(t, r, listen(t), nil)
	parkWaitIdle(t)
	tt.target.CloseWrite()
	tt.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(tt.client); len(b) != 0 || err != nil {
		t.Fatalf("client read %q, %v; want EOF", b, err)
	}
	parkWaitIdle(t)
	if err := func() error {
		if _, err := tt.client.Write([]byte("late")); err != nil {
			return err
		}
		got := make([]byte, 4)
		tt.target.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadFull(tt.target, got)
		return err
	}(); err != nil {
		t.Fatalf("up after half-close: %v", err)
	}
	tt.client.CloseWrite()
	res := tt.wait(t, 5*time.Second)
	if want := (Result{Up: 4, Reason: EndTargetClosed}); res != want {
		t.Errorf("res = %+v; want %+v", res, want)
	}
}

func TestRelayParkResetWhileParked(t *testing.T) {
	for _, side := range []string{"client", "target"} {
		t.Run(side, func(t *testing.T) {
			r := &Relay{}
			checkLeaks(t, r)
			tt := parkStart(t, r, listen(t), nil)
			if err := parkEcho(tt, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			parkWaitIdle(t)
			victim, other, want := tt.client, tt.target, EndClientReset
			if side == "target" {
				victim, other, want = tt.target, tt.client, EndTargetReset
			}
			reset(t, victim)
			res := tt.wait(t, 5*time.Second)
			if res.Reason != want || !errors.Is(res.Err, syscall.ECONNRESET) {
				t.Errorf("res = %+v; want %s, ECONNRESET", res, want)
			}
			expectClosed(t, other)
		})
	}
}

func TestRelayParkCancelWhileParked(t *testing.T) {
	r := &Relay{}
	checkLeaks(t, r)
	tt := parkStart(t, r, listen(t), nil)
	if err := parkEcho(tt, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	parkWaitIdle(t)
	cause := errors.New("shutdown")
	tt.cancel(cause)
	res := tt.wait(t, 5*time.Second)
	if want := (Result{Up: 2, Down: 2, Reason: EndCanceled, Err: cause}); res != want {
		t.Errorf("res = %+v; want %+v", res, want)
	}
	expectClosed(t, tt.client)
	expectClosed(t, tt.target)
}

func TestRelayParkIdleTimeoutWhileParked(t *testing.T) {
	r := &Relay{IdleTimeout: testIdle}
	checkLeaks(t, r)
	tt := parkStart(t, r, listen(t), nil)
	if err := parkEcho(tt, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	last := time.Now()
	parkWaitIdle(t)
	res := tt.wait(t, 5*time.Second)
	if d := time.Since(last); d < testIdle-20*time.Millisecond {
		t.Errorf("ended %v after the last byte; want >= %v", d, testIdle)
	}
	if res.Reason != EndIdleTimeout || !errors.Is(res.Err, os.ErrDeadlineExceeded) || res.Up != 2 || res.Down != 2 {
		t.Errorf("res = %+v; want idle_timeout wrapping os.ErrDeadlineExceeded after 2 bytes each way", res)
	}
	expectClosed(t, tt.client)
}

// Many tunnels waking at once, each echoing small messages.
func TestRelayParkManyWakeUps(t *testing.T) {
	const tunnels, msgs = 200, 20
	r := &Relay{}
	checkLeaks(t, r)
	ln := listen(t)
	tts := make([]*parkedTestTunnel, tunnels)
	for i := range tts {
		tts[i] = parkStart(t, r, ln, nil)
	}
	parkWaitIdle(t)
	var wg sync.WaitGroup
	for i, tt := range tts {
		wg.Go(func() { // the target echoes
			_ = tt.target.SetDeadline(time.Now().Add(60 * time.Second)) // fail, not hang
			io.Copy(tt.target, tt.target)
			tt.target.CloseWrite()
		})
		wg.Go(func() {
			defer tt.client.CloseWrite() // on every path, so that the echo ends
			got := make([]byte, 64)
			for j := range msgs {
				msg := fmt.Appendf(nil, "tunnel %d message %d", i, j)
				if _, err := tt.client.Write(msg); err != nil {
					t.Error(err)
					return
				}
				tt.client.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(tt.client, got[:len(msg)]); err != nil || !bytes.Equal(got[:len(msg)], msg) {
					t.Errorf("tunnel %d: got %q, %v; want %q", i, got[:len(msg)], err, msg)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, tt := range tts {
		res := tt.wait(t, 5*time.Second)
		if res.Up != res.Down || res.Up < int64(msgs*len("tunnel 0 message 0")) || res.Reason != EndClientClosed {
			t.Errorf("tunnel %d: res = %+v", i, res)
		}
	}
}
