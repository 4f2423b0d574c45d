package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds for the idle scenario: a proxy that stops accepting (fd limit)
// must not keep the run waiting for thousands of dial timeouts.
const (
	idleWorkers     = 64
	idleTunnelLimit = 3 * time.Second  // per tunnel setup
	idleOpenLimit   = 60 * time.Second // whole opening phase
	idleMaxFailures = 100              // stop opening after this many
	idlePingLimit   = 10 * time.Second // all pings answered within
)

// scenarioIdle opens N idle WebSocket tunnels, measures the proxy's fds and
// RSS before and after, then checks that every tunnel answers a ping.
func scenarioIdle(ctx context.Context, env *benchEnv, rp *runningProxy) *outcome {
	o := newOutcome()
	n := env.opts.idleN
	o.set("tunnels_requested", float64(n))
	before, err := settledStats(rp)
	if err != nil {
		o.fail(err)
		return o
	}
	if rp.proc != nil {
		o.set("proxy_fd_limit", float64(fdLimit(rp.proc.pid())))
	}
	// Read after the RSS figure: a scrape allocates in the proxy.
	rtBefore := scrapeGoRuntime(ctx, rp, o)

	start := time.Now()
	conns := openIdle(ctx, env, rp, n, o)
	defer closeAll(conns)
	opened := 0
	for _, c := range conns {
		if c != nil {
			opened++
		}
	}
	openSecs := time.Since(start).Seconds()
	o.set("tunnels_opened", float64(opened))
	o.set("open_seconds", openSecs)
	o.set("open_per_s", ratio(float64(opened), openSecs))
	if err := rp.alive(); err != nil {
		o.fail(err)
		return o
	}

	after, err := settledStats(rp)
	if err != nil {
		o.fail(err)
		return o
	}
	if rp.proc != nil && opened > 0 {
		o.set("fds_before", float64(before.FDs))
		o.set("fds_after", float64(after.FDs))
		o.set("fds_per_tunnel", float64(after.FDs-before.FDs)/float64(opened))
		o.set("rss_before_kib", float64(before.RSSKiB))
		o.set("rss_after_kib", float64(after.RSSKiB))
		o.set("kib_per_tunnel", float64(after.RSSKiB-before.RSSKiB)/float64(opened))
		rtAfter := scrapeGoRuntime(ctx, rp, o)
		for k, v := range rtAfter {
			if b, ok := rtBefore[k]; ok {
				o.set(k+"_per_tunnel", (v-b)/float64(opened))
			}
		}
	}

	pingStart := time.Now()
	o.set("pings_answered", float64(pingAll(conns, o)))
	o.set("ping_seconds", time.Since(pingStart).Seconds())
	return o
}

// openIdle opens up to n tunnels with a bounded pool of workers; failed
// slots stay nil.
func openIdle(ctx context.Context, env *benchEnv, rp *runningProxy, n int, o *outcome) []*wsConn {
	conns := make([]*wsConn, n)
	end := time.Now().Add(idleOpenLimit)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	d := rp.dialer()
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	for range idleWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil && failures.Load() < idleMaxFailures {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				tctx, tcancel := context.WithTimeout(ctx, idleTunnelLimit)
				c, err := openWS(tctx, d, env.echo.WS)
				tcancel()
				if err != nil {
					failures.Add(1)
					o.fail(err)
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if failures.Load() >= idleMaxFailures {
		o.note("stopped opening after 100 failures")
	}
	if !time.Now().Before(end) {
		o.note("opening phase hit its 60s limit")
	}
	return conns
}

// pingAll sends a ping on every tunnel, then reads the pongs, all within
// idlePingLimit; it returns how many answered.
func pingAll(conns []*wsConn, o *outcome) int {
	deadline := time.Now().Add(idlePingLimit)
	payload := []byte("idleping")
	sent := make([]bool, len(conns))
	for i, c := range conns {
		if c == nil {
			continue
		}
		_ = c.SetWriteDeadline(deadline)
		if err := c.writeFrame(opPing, payload); err != nil {
			o.fail(err)
			continue
		}
		sent[i] = true
	}
	var answered, next atomic.Int64
	var wg sync.WaitGroup
	for range idleWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(conns) {
					return
				}
				if !sent[i] {
					continue
				}
				_ = conns[i].SetReadDeadline(deadline)
				if err := conns[i].expect(opPing, len(payload), buf); err != nil {
					o.fail(err)
					continue
				}
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(answered.Load())
}

func closeAll(conns []*wsConn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// settledStats reads the proxy's figures once its fd count has held still
// for two reads 150 ms apart (tunnels still being accepted or torn down
// would skew the per-tunnel division), giving up after 3 s.
func settledStats(rp *runningProxy) (treeStats, error) {
	prev, err := rp.stats()
	if err != nil || rp.proc == nil {
		return prev, err
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(150 * time.Millisecond)
		cur, err := rp.stats()
		if err != nil {
			return cur, err
		}
		if cur.FDs == prev.FDs {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}

// goRuntimeMetrics are the Go collector's figures that explain an idle
// tunnel's RSS, renamed to the units the report uses.
var goRuntimeMetrics = map[string]struct {
	name  string
	scale float64
}{
	"go_goroutines":                 {"goroutines", 1},
	"go_memstats_stack_inuse_bytes": {"stack_kib", 1.0 / 1024},
	"go_memstats_heap_inuse_bytes":  {"heap_inuse_kib", 1.0 / 1024},
	"go_memstats_heap_alloc_bytes":  {"heap_alloc_kib", 1.0 / 1024},
}

// scrapeGoRuntime reads wsegress's /metrics when it serves them; nil
// otherwise or on failure (recorded on o).
func scrapeGoRuntime(ctx context.Context, rp *runningProxy, o *outcome) map[string]float64 {
	if rp.metrics == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+rp.metrics+"/metrics", nil)
	if err != nil {
		o.fail(err)
		return nil
	}
	// No keep-alive: an idle scrape connection would count as a proxy fd.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		o.fail(fmt.Errorf("scrape metrics: %w", err))
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		m, known := goRuntimeMetrics[name]
		if !ok || !known {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[m.name] = v * m.scale
		}
	}
	return out
}
