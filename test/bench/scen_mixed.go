package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// mixedGrace is how long the mixed scenario waits after its window for the
// answers to messages sent in it.
const mixedGrace = 2 * time.Second

// scenarioMixed checks that bulk does not starve small frames: a few
// tunnels push bulk both ways at full speed while many echo tunnels send
// small messages at a fixed pace (open loop: a late answer does not delay
// the next message). Each message's round trip counts from the time it was
// due to be sent, so a send held up by a busy load CPU counts too.
func scenarioMixed(ctx context.Context, env *benchEnv, rp *runningProxy) *outcome {
	o := newOutcome()
	opts := env.opts
	conns := openEchoConns(ctx, env, rp, opts.mixedEcho, o)
	defer closeAll(conns)
	payload := make([]byte, opts.echoSize)
	if !warmEcho(conns, payload, o) {
		return o
	}
	var bulk []*tunnel
	defer func() {
		for _, t := range bulk {
			t.Close()
		}
	}()
	for range opts.mixedBulk {
		tctx, cancel := context.WithTimeout(ctx, setupLimit)
		t, err := rp.dialer().dial(tctx, env.echo.Raw)
		cancel()
		if err == nil {
			if _, err = t.Write([]byte{modeBoth}); err != nil {
				t.Close()
			}
		}
		if err != nil {
			o.fail(fmt.Errorf("bulk tunnel: %w", err))
			return o
		}
		bulk = append(bulk, t)
	}
	o.set("echo_tunnels", float64(len(conns)))
	o.set("bulk_tunnels", float64(len(bulk)))

	win, err := startWindow(env, rp)
	if err != nil {
		o.fail(err)
		return o
	}
	start := time.Now()
	until := start.Add(opts.mixedDur)
	var up, down atomic.Int64
	var wg, echoWG sync.WaitGroup
	for _, t := range bulk {
		wg.Go(func() {
			n, err := bulkWrite(t, until)
			up.Add(n)
			if err != nil {
				o.fail(fmt.Errorf("bulk up: %w", err))
			}
		})
		wg.Go(func() {
			n, err := bulkRead(t, until)
			down.Add(n)
			if err != nil {
				o.fail(fmt.Errorf("bulk down: %w", err))
			}
		})
	}
	interval := time.Second / time.Duration(opts.mixedRate)
	rtts := make([][]time.Duration, len(conns))
	lates := make([][]time.Duration, len(conns))
	var sent atomic.Int64
	for i, c := range conns {
		echoWG.Go(func() {
			var n int64
			rtts[i], lates[i], n = pacedEcho(c, start, until, interval, len(payload), o)
			sent.Add(n)
		})
	}
	// The window ends with the bulk transfers; answers to the last echo
	// messages may arrive a little later.
	wg.Wait()
	cw, err := win.end()
	echoWG.Wait()
	if err != nil {
		o.fail(err)
		return o
	}
	var all []time.Duration
	for _, r := range rtts {
		all = append(all, r...)
	}
	var late []time.Duration
	for _, l := range lates {
		late = append(late, l...)
	}
	o.set("send_late_p99_us", percentiles(late, 99)[0])
	o.set("echo_sent", float64(sent.Load()))
	o.set("echo_answered", float64(len(all)))
	if len(all) > 0 { // no answers: no RTT, rather than a 0 that reads as fast
		p := percentiles(all, 50, 99)
		o.set("echo_p50_us", p[0])
		o.set("echo_p99_us", p[1])
	}
	mb := float64(up.Load()+down.Load()) / 1e6
	o.set("up_mb_s", float64(up.Load())/1e6/cw.Wall)
	o.set("down_mb_s", float64(down.Load())/1e6/cw.Wall)
	o.setWindow("", cw)
	o.setSyscalls("", cw.Syscalls, mb)
	if rp.proc != nil {
		o.set("mb_per_cpu_s", ratio(mb, cw.Proxy))
	}
	if lost := sent.Load() - int64(len(all)); lost > 0 {
		o.note(fmt.Sprintf("%d of %d paced echo messages unanswered within %v after the window", lost, sent.Load(), mixedGrace))
	}
	return o
}

// pacedEcho sends one message per interval on c from a random phase after
// start until until, each carrying the time it was due, and reads the
// answers concurrently. It returns the round trips (from due time to
// answer), how late each message was written (the load side's own delay,
// part of its round trip), and the number of messages sent.
func pacedEcho(c *wsConn, start, until time.Time, interval time.Duration, size int, o *outcome) (rtts, late []time.Duration, n int64) {
	// The reader stops once the sender is done and every message is
	// answered. Whichever of the two sees that last acts: the reader
	// returns, or the sender wakes it with a read deadline of now
	// (sync/atomic operations are sequentially consistent, so at least
	// one of them sees it).
	var sent, recv atomic.Int64
	var sendDone atomic.Bool
	rtts = make([]time.Duration, 0, int(until.Sub(start)/interval)+2)
	late = make([]time.Duration, 0, cap(rtts))
	readDone := make(chan struct{})
	_ = c.SetReadDeadline(until.Add(mixedGrace))
	go func() {
		defer close(readDone)
		buf := make([]byte, size+16)
		for {
			op, p, err := c.readFrame(buf)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					o.fail(fmt.Errorf("paced echo: read frame: %w", err))
				}
				return
			}
			if op != opBinary || len(p) != size {
				o.fail(fmt.Errorf("paced echo: got opcode %#x len %d; want %#x len %d", op, len(p), opBinary, size))
				return
			}
			due := time.Unix(0, int64(binary.BigEndian.Uint64(p)))
			rtts = append(rtts, time.Since(due))
			if recv.Add(1) >= sent.Load() && sendDone.Load() {
				return
			}
		}
	}()
	payload := make([]byte, size)
	_ = c.SetWriteDeadline(until.Add(mixedGrace))
	due := start.Add(rand.N(interval))
	for ; due.Before(until); due = due.Add(interval) {
		time.Sleep(time.Until(due))
		late = append(late, time.Since(due))
		binary.BigEndian.PutUint64(payload, uint64(due.UnixNano()))
		sent.Add(1)
		if err := c.writeFrame(opBinary, payload); err != nil {
			sent.Add(-1)
			o.fail(fmt.Errorf("paced echo: write frame: %w", err))
			break
		}
	}
	sendDone.Store(true)
	if recv.Load() >= sent.Load() {
		_ = c.SetReadDeadline(time.Now())
	}
	<-readDone
	return rtts, late, sent.Load()
}
