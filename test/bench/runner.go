package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// scenario functions measure one proxy that runAll started for them.
var scenarios = map[string]func(context.Context, *benchEnv, *runningProxy) *outcome{
	"idle":    scenarioIdle,
	"connect": scenarioConnect,
	"bulk":    scenarioBulk,
	"echo":    scenarioEcho,
	"mixed":   scenarioMixed,
}

// runAll runs every selected scenario for every available proxy, runs
// outermost so that drifting background load spreads over all proxies,
// each measurement on a freshly started proxy. It stops starting new
// measurements when the time budget is spent or ctx is cancelled.
func runAll(ctx context.Context, env *benchEnv, rep *report, proxies []string) {
	for _, s := range env.skipped {
		rep.skip(s)
	}
	scens := splitList(env.opts.scenarios)
	start := time.Now()
	for run := 1; run <= env.opts.runs; run++ {
		for _, sc := range scens {
			for _, px := range proxies {
				if sc == "auth" && px != pWsegress {
					continue
				}
				if ctx.Err() != nil {
					rep.skip(fmt.Sprintf("run %d %s %s: interrupted", run, sc, px))
					continue
				}
				if time.Since(start) > env.opts.budget {
					rep.skip(fmt.Sprintf("run %d %s %s: time budget %v spent", run, sc, px, env.opts.budget))
					continue
				}
				t0 := time.Now()
				o := measure(ctx, env, sc, px)
				rep.add(run, sc, px, o, time.Since(t0))
				progress(run, sc, px, o, time.Since(t0))
			}
		}
	}
}

// measure starts a fresh proxy, runs one scenario against it and stops it.
func measure(ctx context.Context, env *benchEnv, sc, px string) *outcome {
	if sc == "auth" {
		return scenarioAuth(ctx, env)
	}
	f, ok := scenarios[sc]
	if !ok {
		o := newOutcome()
		o.fail(fmt.Errorf("unknown scenario %q", sc))
		return o
	}
	// Only the idle scenario reads /metrics; elsewhere it would be one more
	// listener the peers do not have.
	rp, err := startProxy(env, px, proxyOpts{metrics: sc == "idle"})
	if err != nil {
		o := newOutcome()
		o.fail(err)
		return o
	}
	defer rp.stop()
	rp.countSyscalls = rp.proc != nil && sc != "idle"
	o := f(ctx, env, rp)
	o.Notes = append(o.Notes, rp.notes...)
	if err := rp.alive(); err != nil {
		o.fail(err)
	}
	return o
}

// availableProxies keeps the selected proxies that can run here, records
// why the others are skipped, and finds the peers' binaries.
func availableProxies(env *benchEnv) []string {
	var out []string
	for _, px := range splitList(env.opts.proxies) {
		switch px {
		case pDirect, pGoproxy:
		case pWsegress:
			if env.wsegress == "" {
				env.skipped = append(env.skipped, "wsegress: no -wsegress binary given (did it build?)")
				continue
			}
			if _, err := os.Stat(env.wsegress); err != nil {
				env.skipped = append(env.skipped, "wsegress: "+err.Error())
				continue
			}
		case pSquid, pTinyproxy:
			bin, err := lookProxyBinary(px)
			if err != nil {
				env.skipped = append(env.skipped, px+": "+err.Error())
				continue
			}
			if px == pSquid {
				env.squid = bin
			} else {
				env.tinyproxy = bin
			}
		default:
			env.skipped = append(env.skipped, px+": unknown proxy")
			continue
		}
		out = append(out, px)
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// progress prints one line per measurement to stderr, so a long run shows
// where it is and failures are visible before the table.
func progress(run int, sc, px string, o *outcome, d time.Duration) {
	keys := map[string][]string{
		"idle":    {"tunnels_opened", "pings_answered", "fds_per_tunnel", "kib_per_tunnel"},
		"connect": {"tunnels_per_cpu_s", "tunnels_per_s", "setup_p50_us", "setup_p99_us", "sys_per_unit"},
		"bulk":    {"up_mb_s", "down_mb_s", "both_mb_s", "up_mb_per_cpu_s", "down_mb_per_cpu_s", "both_mb_per_cpu_s", "up_sys_per_unit", "down_sys_per_unit", "both_sys_per_unit"},
		"echo":    {"msgs_per_s", "msgs_per_cpu_s", "rtt_p50_us", "rtt_p99_us", "sys_per_unit"},
		"mixed":   {"echo_p50_us", "echo_p99_us", "up_mb_s", "down_mb_s", "mb_per_cpu_s", "sys_per_unit"},
		"auth":    {"off_tunnels_per_cpu_s", "on_tunnels_per_cpu_s", "auth_ratio"},
	}[sc]
	var b strings.Builder
	fmt.Fprintf(&b, "run %d %-7s %-9s %5.1fs", run, sc, px, d.Seconds())
	for _, k := range keys {
		if v, ok := o.Metrics[k]; ok {
			fmt.Fprintf(&b, " %s=%s", k, fmtNum(v))
		}
	}
	if n := o.errorCount(); n > 0 {
		fmt.Fprintf(&b, " errors=%d", n)
		for msg, c := range o.Errors {
			fmt.Fprintf(&b, " [%d× %s]", c, msg)
			break
		}
	}
	fmt.Fprintln(os.Stderr, b.String())
}
