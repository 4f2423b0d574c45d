package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	setupLimit    = 5 * time.Second  // one tunnel's whole life in this scenario
	phaseLimit    = 30 * time.Second // any setup phase (sequential setups, opening held tunnels)
	latencyWarmup = 20
	echoPayload   = 64
)

// scenarioConnect measures the CONNECT path: first the unloaded setup
// latency (sequential setups, CONNECT + 200 + WebSocket 101), then new
// tunnels per second of proxy CPU under load, each tunnel doing a full
// life: connect, CONNECT, 200, WS handshake, one echo, close.
func scenarioConnect(ctx context.Context, env *benchEnv, rp *runningProxy) *outcome {
	o := newOutcome()
	measureSetupLatency(ctx, env, rp, o)
	if err := rp.alive(); err != nil {
		o.fail(err)
		return o
	}
	measureConnectRate(ctx, env, rp, o)
	return o
}

// measureSetupLatency times single setups one after another, so the proxy
// is idle apart from the one request.
func measureSetupLatency(ctx context.Context, env *benchEnv, rp *runningProxy, o *outcome) {
	d := rp.dialer()
	// setup: dial to 101; tunnel: dial to 200 (TCP connect for direct);
	// upgrade: the WebSocket handshake through the tunnel.
	var setup, tunnel, upgrade []time.Duration
	payload := make([]byte, echoPayload)
	buf := make([]byte, 256)
	end := time.Now().Add(phaseLimit)
	for i := 0; i < latencyWarmup+env.opts.latencyN && time.Now().Before(end) && ctx.Err() == nil; i++ {
		tctx, cancel := context.WithTimeout(ctx, setupLimit)
		t0 := time.Now()
		t, err := d.dial(tctx, env.echo.WS)
		t1 := time.Now()
		var c *wsConn
		if err == nil {
			c, err = upgradeWS(tctx, t, env.echo.WS)
		}
		t2 := time.Now()
		cancel()
		if err != nil {
			o.fail(err)
			continue
		}
		if i >= latencyWarmup {
			setup = append(setup, t2.Sub(t0))
			tunnel = append(tunnel, t1.Sub(t0))
			upgrade = append(upgrade, t2.Sub(t1))
		}
		_ = c.SetDeadline(time.Now().Add(setupLimit))
		if err := c.roundTrip(opBinary, payload, buf); err != nil {
			o.fail(err)
		}
		c.Close()
	}
	if !time.Now().Before(end) {
		o.note(fmt.Sprintf("latency phase cut at %v", phaseLimit))
	}
	p := percentiles(setup, 50, 99)
	o.set("setup_samples", float64(len(setup)))
	o.set("setup_p50_us", p[0])
	o.set("setup_p99_us", p[1])
	o.set("tunnel_p50_us", percentiles(tunnel, 50)[0])
	o.set("upgrade_p50_us", percentiles(upgrade, 50)[0])
}

// measureConnectRate runs full tunnel lives for the configured time and
// sets the rate figures on o.
func measureConnectRate(ctx context.Context, env *benchEnv, rp *runningProxy, o *outcome) {
	n, c, err := connectRate(ctx, env, rp, env.opts.connectDur, o)
	if err != nil {
		o.fail(err)
		return
	}
	setRate(o, "", n, c, rp)
	if n >= int64(env.opts.connectMax) {
		o.note(fmt.Sprintf("stopped at the count limit of %d tunnels", env.opts.connectMax))
	}
}

// setRate records a connect-rate measurement under prefix.
func setRate(o *outcome, prefix string, n int64, c windowCPU, rp *runningProxy) {
	o.set(prefix+"tunnels", float64(n))
	o.set(prefix+"tunnels_per_s", ratio(float64(n), c.Wall))
	o.setWindow(prefix, c)
	o.setSyscalls(prefix, c.Syscalls, float64(n))
	if rp.proc != nil {
		o.set(prefix+"tunnels_per_cpu_s", ratio(float64(n), c.Proxy))
	}
}

// connectRate runs full tunnel lives from several workers for dur or the
// count limit, whichever ends first, and returns the tunnels completed and
// the window's CPU figures. Failures are counted on o.
func connectRate(ctx context.Context, env *benchEnv, rp *runningProxy, dur time.Duration, o *outcome) (int64, windowCPU, error) {
	d := rp.dialer()
	w, err := startWindow(env, rp)
	if err != nil {
		return 0, windowCPU{}, err
	}
	end := time.Now().Add(dur)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var started, done atomic.Int64
	var wg sync.WaitGroup
	for range env.opts.connectWorkers {
		wg.Go(func() {
			payload := make([]byte, echoPayload)
			buf := make([]byte, 256)
			// The loop tests the clock, not ctx.Err(): with GOMAXPROCS=1 the
			// context's timer may fire late, and a dial with a passed
			// deadline fails at once, so ctx.Err() would let the loop spin
			// on instant "i/o timeout" errors.
			for time.Now().Before(end) && ctx.Err() == nil && started.Add(1) <= int64(env.opts.connectMax) {
				if err := tunnelLife(ctx, d, env.echo.WS, payload, buf); err != nil {
					if time.Now().Before(end) { // not just cut off by the window
						o.fail(err)
					}
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	c, err := w.end()
	return done.Load(), c, err
}

// tunnelLife is one tunnel from dial to close, with one echo in between.
func tunnelLife(ctx context.Context, d dialer, target string, payload, buf []byte) error {
	tctx, cancel := context.WithTimeout(ctx, setupLimit)
	defer cancel()
	c, err := openWS(tctx, d, target)
	if err != nil {
		return err
	}
	defer c.Close()
	setCtxDeadline(tctx, c.Conn)
	return c.roundTrip(opBinary, payload, buf)
}

// authRounds: the auth scenario alternates auth-off and auth-on windows
// this many times, so drifting background load hits both alike.
const authRounds = 4

// scenarioAuth measures the CONNECT path of wsegress with Basic auth off
// and on. Both instances run at once (the idle one costs nothing) and take
// turns under load; the ratio compares the summed windows. It first checks
// that auth is really enforced (407 without credentials).
func scenarioAuth(ctx context.Context, env *benchEnv) *outcome {
	o := newOutcome()
	var rps [2]*runningProxy
	for i, withAuth := range []bool{false, true} {
		rp, err := startProxy(env, pWsegress, proxyOpts{auth: withAuth})
		if err != nil {
			o.fail(err)
			return o
		}
		defer rp.stop()
		rps[i] = rp
	}
	if err := checkAuthEnforced(ctx, env, rps[1]); err != nil {
		o.fail(err)
		o.note("auth not measured: " + err.Error())
		return o
	}
	prefixes := [2]string{"off_", "on_"}
	for i, rp := range rps {
		sub := newOutcome()
		measureSetupLatency(ctx, env, rp, sub)
		o.merge(prefixes[i], sub)
	}
	var n [2]int64
	var cpu [2]windowCPU
	for range authRounds {
		for i, rp := range rps {
			k, c, err := connectRate(ctx, env, rp, env.opts.connectDur/authRounds, o)
			if err != nil {
				o.fail(err)
				return o
			}
			n[i] += k
			cpu[i] = cpu[i].add(c)
		}
	}
	for i, rp := range rps {
		setRate(o, prefixes[i], n[i], cpu[i], rp)
	}
	o.set("auth_ratio", ratio(o.Metrics["on_tunnels_per_cpu_s"], o.Metrics["off_tunnels_per_cpu_s"]))
	o.set("auth_setup_p50_ratio", ratio(o.Metrics["on_setup_p50_us"], o.Metrics["off_setup_p50_us"]))
	return o
}

// checkAuthEnforced expects 407 without credentials and 200 with them.
func checkAuthEnforced(ctx context.Context, env *benchEnv, rp *runningProxy) error {
	tctx, cancel := context.WithTimeout(ctx, setupLimit)
	defer cancel()
	if t, err := (dialer{proxy: rp.addr}).dial(tctx, env.echo.WS); err == nil {
		t.Close()
		return fmt.Errorf("CONNECT without credentials got 200; is --htpasswd enforced?")
	} else if want := "status 407"; !strings.Contains(err.Error(), want) {
		return fmt.Errorf("CONNECT without credentials: %v; want %s", err, want)
	}
	t, err := rp.dialer().dial(tctx, env.echo.WS)
	if err != nil {
		return fmt.Errorf("CONNECT with credentials: %w", err)
	}
	t.Close()
	return nil
}
