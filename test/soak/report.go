package main

import (
	"fmt"
	"strings"
	"time"
)

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "—"
	case d == never:
		return "∞"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f", float64(d)/1e6)
}

// p50p99 formats a window's percentiles in milliseconds: "1.2 / 4.8".
func p50p99(ds []time.Duration) string {
	return ms(percentile(ds, 50)) + " / " + ms(percentile(ds, 99))
}

func (r *result) refused() string {
	if n := r.good.refusals(); n > 0 {
		return fmt.Sprintf("**%d** (%s)", n, countList(r.good.refused))
	}
	return "0"
}

func (r *result) fds() string {
	back := ""
	if !r.fdBack {
		back = " (not back)"
	}
	return fmt.Sprintf("%d → %d → %d%s", r.fdBase, r.fdPeak, r.fdEnd, back)
}

// line is the one-line progress summary of a phase.
func (r *result) line() string {
	return fmt.Sprintf("%s: good %d ok, refused %s; setup %s ms; rtt %s ms; cpu %.2f s; fds %s; attacker: %s",
		r.ph.key, r.good.ok, r.refused(), p50p99(r.good.setup), p50p99(r.good.rtt), r.cpu, r.fds(), r.attacker)
}

type rep struct {
	text   string
	failed int
}

// report renders the markdown table, the notes and the target checks.
func report(o *options, args []string, rs []*result, load string) rep {
	var b strings.Builder
	cmd := "go run ./test/soak"
	if len(args) > 0 {
		cmd += " " + strings.Join(args, " ")
	}
	fmt.Fprintf(&b, "\nCommand: `%s`\n\n", cmd)
	fmt.Fprintf(&b, "wsegress with default settings; good clients: %d churning + %d held tunnels from 127.0.0.1; "+
		"each phase %v on a fresh proxy; times in ms (p50 / p99; ∞: refusals above 1%%); fds base → peak → after; "+
		"machine load average %s.\n\n", o.churners, o.held, o.phase, load)
	b.WriteString("| attack | good tunnels | good refused | CONNECT→200 | echo RTT | proxy CPU s | fds | attacker got |\n")
	b.WriteString("| --- | --: | --- | --: | --: | --: | --: | --- |\n")
	var base, burst *result
	for _, r := range rs {
		switch r.ph.key {
		case "baseline":
			base = r
		case "burst":
			burst = r
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %.2f | %s | %s |\n", r.ph.name, r.good.ok, r.refused(),
			p50p99(r.good.setup), p50p99(r.good.rtt), r.cpu, r.fds(), r.attacker)
	}
	b.WriteString("\n")
	for _, r := range rs {
		if r.notes != "" {
			fmt.Fprintf(&b, "- %s: %s\n", r.ph.key, r.notes)
		}
		if r.stalledN > 0 {
			fmt.Fprintf(&b, "- stalled: %.2f fds per stalled tunnel at the peak ((peak − base) / %d)\n",
				float64(r.fdPeak-r.fdBase)/float64(r.stalledN), r.stalledN)
		}
	}

	b.WriteString("\nTargets:\n\n")
	var failed int
	check := func(ok bool, format string, a ...any) {
		word := "PASS"
		if !ok {
			word = "FAIL"
			failed++
		}
		fmt.Fprintf(&b, "    %s  %s\n", word, fmt.Sprintf(format, a...))
	}
	var unloaded time.Duration
	if base != nil {
		unloaded = percentile(base.good.setup, 99)
	}
	for _, r := range rs {
		n := r.good.refusals()
		check(n == 0, "%s: good clients never refused (%d of %d; %s)", r.ph.key, n, n+r.good.ok, orNone(countList(r.good.refused)))
		if r.ph.attack == nil {
			continue
		}
		p99 := percentile(r.good.setup, 99)
		if unloaded > 0 {
			check(p99 > 0 && p99 <= 5*unloaded, "%s: p99 CONNECT→200 %s ms ≤ 5× unloaded %s ms (%s)",
				r.ph.key, ms(p99), ms(unloaded), times(p99, unloaded))
		}
		check(r.fdBack, "%s: fds back to baseline (%d after, baseline %d + slack %d; waited %.1f s)",
			r.ph.key, r.fdEnd, r.fdBase, o.fdSlack, r.recovered.Seconds())
	}
	if burst != nil {
		net := burst.cpu
		how := "raw"
		if base != nil && base.wall > 0 {
			net -= base.cpu / base.wall * burst.wall
			how = fmt.Sprintf("%.2f raw minus the baseline rate over %.0f s", burst.cpu, burst.wall)
		}
		if !burst.fdBack {
			how += "; the proxy was still busy with the burst when the soak stopped waiting: a lower bound"
		}
		check(net <= 3, "burst: %d wrong passwords cost %.2f proxy core-seconds ≤ 3 (%s)", o.burst, net, how)
		p99 := percentile(burst.good.setup, 99)
		check(p99 > 0 && p99 <= time.Second, "burst: authenticated clients' p99 CONNECT→200 %s ms ≤ 1000 ms", ms(p99))
	}
	fmt.Fprintf(&b, "\n%d target(s) failed.\n", failed)
	return rep{text: b.String(), failed: failed}
}

// times is a/b as "3.2×", "∞" when a is never.
func times(a, b time.Duration) string {
	if a == never || b == 0 {
		return "∞"
	}
	return fmt.Sprintf("%.1f×", float64(a)/float64(b))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
