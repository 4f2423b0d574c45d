package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

const echoWarmup = 20 // round trips per tunnel before the timed window

// scenarioEcho holds many tunnels and has each one echo small WebSocket
// messages back to back (one outstanding per tunnel) for a fixed time,
// reporting messages per second of proxy CPU and the round-trip spread.
func scenarioEcho(ctx context.Context, env *benchEnv, rp *runningProxy) *outcome {
	o := newOutcome()
	conns := openEchoConns(ctx, env, rp, env.opts.echoConns, o)
	defer closeAll(conns)
	o.set("tunnels", float64(len(conns)))
	if len(conns) == 0 {
		return o
	}
	payload := make([]byte, env.opts.echoSize)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	ok := warmEcho(conns, payload, o)
	if !ok {
		return o
	}

	win, err := startWindow(env, rp)
	if err != nil {
		o.fail(err)
		return o
	}
	rtts := make([][]time.Duration, len(conns))
	var wg sync.WaitGroup
	deadline := time.Now().Add(env.opts.echoDur)
	for i, c := range conns {
		wg.Go(func() { rtts[i] = echoLoop(c, payload, deadline, o) })
	}
	wg.Wait()
	c, err := win.end()
	if err != nil {
		o.fail(err)
		return o
	}
	var all []time.Duration
	for _, r := range rtts {
		all = append(all, r...)
	}
	n := float64(len(all))
	p := percentiles(all, 50, 99)
	o.set("messages", n)
	o.set("msgs_per_s", ratio(n, c.Wall))
	o.set("rtt_p50_us", p[0])
	o.set("rtt_p99_us", p[1])
	o.setWindow("", c)
	o.setSyscalls("", c.Syscalls, n)
	if rp.proc != nil {
		o.set("msgs_per_cpu_s", ratio(n, c.Proxy))
	}
	return o
}

// openEchoConns opens the held tunnels with a few workers.
func openEchoConns(ctx context.Context, env *benchEnv, rp *runningProxy, n int, o *outcome) []*wsConn {
	slots := make([]*wsConn, n)
	d := rp.dialer()
	end := time.Now().Add(phaseLimit)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n) && time.Now().Before(end) && ctx.Err() == nil; i = next.Add(1) - 1 {
				tctx, cancel := context.WithTimeout(ctx, setupLimit)
				c, err := openWS(tctx, d, env.echo.WS)
				cancel()
				if err != nil {
					o.fail(err)
					continue
				}
				slots[i] = c
			}
		})
	}
	wg.Wait()
	conns := slots[:0]
	for _, c := range slots {
		if c != nil {
			conns = append(conns, c)
		}
	}
	return conns
}

// warmEcho runs a few round trips per tunnel so that first-use costs
// (buffers, stack growth) stay out of the timed window.
func warmEcho(conns []*wsConn, payload []byte, o *outcome) bool {
	var bad atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			buf := make([]byte, len(payload)+16)
			_ = c.SetDeadline(time.Now().Add(setupLimit))
			for range echoWarmup {
				if err := c.roundTrip(opBinary, payload, buf); err != nil {
					o.fail(err)
					bad.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	return bad.Load() == 0
}

// echoLoop does round trips until deadline and returns their durations.
func echoLoop(c *wsConn, payload []byte, deadline time.Time, o *outcome) []time.Duration {
	buf := make([]byte, len(payload)+16)
	rtts := make([]time.Duration, 0, 1024)
	_ = c.SetDeadline(deadline.Add(setupLimit))
	for {
		t0 := time.Now()
		if err := c.roundTrip(opBinary, payload, buf); err != nil {
			o.fail(err)
			return rtts
		}
		now := time.Now()
		rtts = append(rtts, now.Sub(t0))
		if now.After(deadline) {
			return rtts
		}
	}
}
