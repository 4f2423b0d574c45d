package main

import (
	"context"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// goodStats is what the good clients saw in one window.
type goodStats struct {
	mu      sync.Mutex // guards the following fields
	setup   []time.Duration
	rtt     []time.Duration
	ok      int            // tunnels opened (churned and held)
	refused map[string]int // failures by kind: status code, "closed", "timeout", ...
}

func newGoodStats() *goodStats { return &goodStats{refused: map[string]int{}} }

func (s *goodStats) addSetup(d time.Duration) {
	s.mu.Lock()
	s.setup = append(s.setup, d)
	s.ok++
	s.mu.Unlock()
}

func (s *goodStats) addRTT(d time.Duration) {
	s.mu.Lock()
	s.rtt = append(s.rtt, d)
	s.mu.Unlock()
}

// never stands for a setup or echo that did not succeed: it sorts after
// every real time, so refusals show in the percentiles.
const never = time.Duration(math.MaxInt64)

// fail counts a failed setup (or, with echo, a failed round trip).
func (s *goodStats) fail(kind string, echo bool) {
	s.mu.Lock()
	s.refused[kind]++
	if echo {
		s.rtt = append(s.rtt, never)
	} else {
		s.setup = append(s.setup, never)
	}
	s.mu.Unlock()
}

func (s *goodStats) refusals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.refused {
		n += c
	}
	return n
}

// good runs the good clients: churners open a tunnel, upgrade, echo once
// and close, in a loop; held tunnels stay open and echo periodically. All
// come from goodAddr as one user with the right password.
type good struct {
	proxy, target, auth string
	churners, held      int
	stats               atomic.Pointer[goodStats]
	heldUp              atomic.Int32
	wg                  sync.WaitGroup
}

// timeouts for one good exchange: beyond these it counts as refused.
const (
	goodSetupTimeout = 5 * time.Second
	goodEchoTimeout  = 5 * time.Second
	churnPause       = 100 * time.Millisecond
	heldPeriod       = 250 * time.Millisecond
)

var echoPayload = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

func (g *good) start(ctx context.Context) {
	g.stats.Store(newGoodStats())
	for range g.churners {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for sleepCtx(ctx, churnPause) {
				if c := g.open(ctx); c != nil {
					g.echo(c)
					c.Close()
				}
			}
		}()
	}
	for range g.held {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.hold(ctx)
		}()
	}
}

// swap starts a new window and returns the previous one.
func (g *good) swap() *goodStats { return g.stats.Swap(newGoodStats()) }

func (g *good) wait() { g.wg.Wait() }

// open makes one tunnel with a WebSocket on it; nil when it failed (and
// the failure is counted) or ctx ended.
func (g *good) open(ctx context.Context) *conn {
	st := g.stats.Load()
	t0 := time.Now()
	dctx, cancel := context.WithTimeout(ctx, goodSetupTimeout)
	defer cancel()
	c, err := dialFrom(dctx, goodAddr, g.proxy, 0)
	if err != nil {
		if ctx.Err() == nil {
			st.fail("dial "+errKind(err), false)
		}
		return nil
	}
	c.deadline(goodSetupTimeout)
	code, err := c.connect(g.target, g.auth)
	switch {
	case ctx.Err() != nil:
		c.Close()
		return nil
	case err != nil:
		st.fail(errKind(err), false)
		c.Close()
		return nil
	case code != 200:
		st.fail(strconv.Itoa(code), false)
		c.Close()
		return nil
	}
	st.addSetup(time.Since(t0))
	if err := c.upgrade(g.target); err != nil {
		if ctx.Err() == nil {
			st.fail("upgrade "+errKind(err), true)
		}
		c.Close()
		return nil
	}
	return c
}

// echo does one timed round trip; false if it failed.
func (g *good) echo(c *conn) bool {
	st := g.stats.Load()
	c.deadline(goodEchoTimeout)
	t0 := time.Now()
	if err := c.echo(echoPayload); err != nil {
		st.fail("echo "+errKind(err), true)
		return false
	}
	st.addRTT(time.Since(t0))
	return true
}

// hold keeps one tunnel open and echoing, reopening it if it breaks.
func (g *good) hold(ctx context.Context) {
	for ctx.Err() == nil {
		c := g.open(ctx)
		if c == nil {
			sleepCtx(ctx, churnPause)
			continue
		}
		g.heldUp.Add(1)
		for sleepCtx(ctx, heldPeriod) && g.echo(c) {
		}
		g.heldUp.Add(-1)
		c.Close()
	}
}

// percentile returns the p-th percentile (nearest rank) of ds, sorting it.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(p/100*float64(len(ds))+0.999999) - 1
	return ds[max(0, min(rank, len(ds)-1))]
}
