package main

import (
	"fmt"
	"slices"
	"strings"
)

// column is one table column: a header and how to render a proxy's cell.
type column struct {
	head string
	cell func(px string) string
}

// markdown renders the report: setup, one table per scenario, the targets.
func (r *report) markdown() string {
	var b strings.Builder
	o := r.env.opts
	fmt.Fprintf(&b, "\n## wsegress benchmark (%s)\n\n", r.Meta["started"])
	fmt.Fprintf(&b, "- machine: %s, %d CPUs, Linux %s, %s\n", r.Meta["cpu_model"], r.Meta["cpus"], r.Meta["kernel"], r.Meta["go"])
	if c := r.env.cpus; c.Proxy != "" && cpuCount(c.Proxy) > 1 {
		fmt.Fprintf(&b, "- proxy on CPUs %s (GOMAXPROCS=%d for the Go proxies); load generator and echo server on CPU %s, which they share with the proxy (taskset)\n",
			c.Proxy, cpuCount(c.Proxy), c.Load)
	} else if c.Proxy != "" {
		fmt.Fprintf(&b, "- proxy pinned to CPU %s; load generator and echo server on CPU %s (taskset)\n", c.Proxy, c.Load)
	} else {
		fmt.Fprintf(&b, "- not pinned: %s\n", c.Why)
	}
	fmt.Fprintf(&b, "- medians of %d run(s); fd limit %d per process; wsegress%s\n", o.runs, r.env.noFile, r.gogcNote())
	fmt.Fprintf(&b, "- load average at start %s, at end %s (other jobs on the machine add noise)\n",
		r.Meta["loadavg_start"], r.Meta["loadavg_end"])
	fmt.Fprintf(&b, "- total time %.0f s\n", r.Meta["total_seconds"])
	if r.env.perfNote != "" {
		fmt.Fprintf(&b, "- %s\n", r.env.perfNote)
	} else {
		fmt.Fprintf(&b, "- syscalls: `perf stat -p <proxy tree>` over each timed window (%d tracepoints), divided by the work done in it\n", len(r.env.perfEvents))
	}
	r.summary(&b)

	r.table(&b, "idle", fmt.Sprintf("Idle: %s WebSocket tunnels opened and held", fmtNum(float64(o.idleN))), []column{
		r.col("opened", "idle", "tunnels_opened", false),
		r.col("pings answered", "idle", "pings_answered", false),
		r.col("fds / tunnel", "idle", "fds_per_tunnel", false),
		r.col("KiB RSS / tunnel", "idle", "kib_per_tunnel", false),
		r.col("proxy fds after", "idle", "fds_after", false),
		r.col("proxy RSS after (KiB)", "idle", "rss_after_kib", false),
		r.col("opened / s", "idle", "open_per_s", false),
		r.col("proxy fd limit", "idle", "proxy_fd_limit", false),
		r.col("goroutines / tunnel", "idle", "goroutines_per_tunnel", false),
		r.col("Go stack KiB / tunnel", "idle", "stack_kib_per_tunnel", false),
		r.col("Go heap in use KiB / tunnel", "idle", "heap_inuse_kib_per_tunnel", false),
		r.errCol("errors", "idle"),
	})
	r.table(&b, "connect", fmt.Sprintf("Churn: full tunnel lives (CONNECT, 200, WS handshake, one %d B echo, close), %d workers", echoPayload, o.connectWorkers), []column{
		r.col("tunnels / proxy-CPU-s", "connect", "tunnels_per_cpu_s", false),
		r.col("tunnels / s (wall)", "connect", "tunnels_per_s", true),
		r.col("proxy CPU share", "connect", "proxy_cpu_share", false),
		r.col("load CPU share", "connect", "load_cpu_share", false),
		r.col("others' CPU", "connect", "other_cpu_share", false),
		r.col("setup p50 µs", "connect", "setup_p50_us", true),
		r.col("setup p99 µs", "connect", "setup_p99_us", true),
		r.col("to 200 p50 µs", "connect", "tunnel_p50_us", true),
		r.col("WS upgrade p50 µs", "connect", "upgrade_p50_us", true),
		r.sysCol("syscalls / tunnel", "connect", ""),
		r.errCol("errors", "connect"),
	})
	r.table(&b, "bulk", "Bulk: one tunnel, raw TCP; MB/s wall (× direct) and MB per proxy-CPU-s", []column{
		r.col("up MB/s", "bulk", "up_mb_s", true),
		r.col("down MB/s", "bulk", "down_mb_s", true),
		r.col("both MB/s", "bulk", "both_mb_s", true),
		r.col("up MB/CPU-s", "bulk", "up_mb_per_cpu_s", false),
		r.col("down MB/CPU-s", "bulk", "down_mb_per_cpu_s", false),
		r.col("both MB/CPU-s", "bulk", "both_mb_per_cpu_s", false),
		{head: "others' CPU up/down/both", cell: func(px string) string {
			var parts []string
			for _, dir := range []string{"up", "down", "both"} {
				v, ok := r.med("bulk", px, dir+"_other_cpu_share")
				parts = append(parts, map[bool]string{true: fmtNum(v), false: "–"}[ok])
			}
			return strings.Join(parts, " / ")
		}},
		r.sysCol("syscalls / MB up", "bulk", "up_"),
		r.sysCol("syscalls / MB down", "bulk", "down_"),
		r.sysCol("syscalls / MB both", "bulk", "both_"),
	})
	r.table(&b, "echo", fmt.Sprintf("Echo: %d held tunnels, %d-byte WebSocket messages, one outstanding per tunnel", o.echoConns, o.echoSize), []column{
		r.col("msgs / proxy-CPU-s", "echo", "msgs_per_cpu_s", false),
		r.col("msgs / s (wall)", "echo", "msgs_per_s", true),
		r.col("RTT p50 µs", "echo", "rtt_p50_us", true),
		r.col("RTT p99 µs", "echo", "rtt_p99_us", true),
		r.col("proxy CPU share", "echo", "proxy_cpu_share", false),
		r.col("load CPU share", "echo", "load_cpu_share", false),
		r.col("others' CPU", "echo", "other_cpu_share", false),
		r.sysCol("syscalls / msg", "echo", ""),
		r.errCol("errors", "echo"),
	})
	r.table(&b, "mixed", fmt.Sprintf("Mixed: %d tunnels bulk both ways at full speed beside %d echo tunnels sending %d B × %d/s each (paced)",
		o.mixedBulk, o.mixedEcho, o.echoSize, o.mixedRate), []column{
		r.col("echo RTT p50 µs", "mixed", "echo_p50_us", true),
		r.col("echo RTT p99 µs", "mixed", "echo_p99_us", true),
		r.col("send late p99 µs", "mixed", "send_late_p99_us", false),
		r.col("bulk up MB/s", "mixed", "up_mb_s", true),
		r.col("bulk down MB/s", "mixed", "down_mb_s", true),
		r.col("MB / proxy-CPU-s", "mixed", "mb_per_cpu_s", false),
		{head: "echo answered / sent", cell: func(px string) string {
			a, ok1 := r.med("mixed", px, "echo_answered")
			s, ok2 := r.med("mixed", px, "echo_sent")
			if !ok1 || !ok2 {
				return "–"
			}
			return fmtNum(a) + " / " + fmtNum(s)
		}},
		r.col("proxy CPU share", "mixed", "proxy_cpu_share", false),
		r.col("load CPU share", "mixed", "load_cpu_share", false),
		r.col("others' CPU", "mixed", "other_cpu_share", false),
		r.sysCol("syscalls / MB", "mixed", ""),
		r.errCol("errors", "mixed"),
	})
	r.table(&b, "auth", fmt.Sprintf("Auth: wsegress CONNECT path, Basic auth with a bcrypt (cost %d) user, off vs on", o.bcryptCost), []column{
		r.col("off: tunnels / proxy-CPU-s", "auth", "off_tunnels_per_cpu_s", false),
		r.col("on: tunnels / proxy-CPU-s", "auth", "on_tunnels_per_cpu_s", false),
		r.col("on / off", "auth", "auth_ratio", false),
		r.col("off: setup p50 µs", "auth", "off_setup_p50_us", false),
		r.col("on: setup p50 µs", "auth", "on_setup_p50_us", false),
		r.errCol("errors", "auth"),
	})

	fmt.Fprintf(&b, "\n### Issue 12 targets (wsegress, medians; \"more cores must help\" needs a second run with -proxy-cpus)\n\n| target | want | measured | status |\n| --- | --- | --- | --- |\n")
	for _, t := range r.Targets12 {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Measured, t.Status)
	}
	fmt.Fprintf(&b, "\n### Issue 7 targets (wsegress, medians)\n\n| target | want | measured | status |\n| --- | --- | --- | --- |\n")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Measured, t.Status)
	}
	r.notes(&b)
	return b.String()
}

// table writes one scenario's table if any proxy has results for it.
func (r *report) table(b *strings.Builder, sc, title string, cols []column) {
	var rows []string
	for _, px := range r.proxyOrder() {
		if _, ok := r.Medians[sc][px]; !ok && r.errTotal(sc, px) == 0 {
			continue
		}
		rows = append(rows, px)
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "\n### %s\n\n| proxy |", title)
	for _, c := range cols {
		fmt.Fprintf(b, " %s |", c.head)
	}
	b.WriteString("\n| --- |" + strings.Repeat(" ---: |", len(cols)) + "\n")
	for _, px := range rows {
		fmt.Fprintf(b, "| %s |", px)
		for _, c := range cols {
			fmt.Fprintf(b, " %s |", c.cell(px))
		}
		b.WriteString("\n")
	}
}

// col renders a metric's median; withDirect appends its ratio to direct.
func (r *report) col(head, sc, metric string, withDirect bool) column {
	return column{head: head, cell: func(px string) string {
		v, ok := r.med(sc, px, metric)
		if !ok {
			return "–"
		}
		s := fmtNum(v)
		if withDirect && px != pDirect {
			if q, ok := r.ratioOf(sc, px, metric); ok {
				s += fmt.Sprintf(" (%.2f×)", q)
			}
		}
		return s
	}}
}

// sysCol shows syscalls per unit of work with the top named syscalls.
func (r *report) sysCol(head, sc, prefix string) column {
	return column{head: head, cell: func(px string) string { return r.sysBreakdown(sc, px, prefix, 4) }}
}

// errCol shows the errors summed over runs.
func (r *report) errCol(head, sc string) column {
	return column{head: head, cell: func(px string) string { return fmt.Sprint(r.errTotal(sc, px)) }}
}

func (r *report) errTotal(sc, px string) int {
	n := 0
	for _, u := range r.Results {
		if u.Scenario == sc && u.Proxy == px {
			n += u.errorCount()
		}
	}
	return n
}

// notes lists errors (most frequent first), notes and skipped measurements.
func (r *report) notes(b *strings.Builder) {
	var lines []string
	for _, u := range r.Results {
		for _, n := range u.Notes {
			lines = append(lines, fmt.Sprintf("- run %d %s %s: %s", u.Run, u.Scenario, u.Proxy, n))
		}
		type kv struct {
			msg string
			n   int
		}
		var errs []kv
		for m, n := range u.Errors {
			errs = append(errs, kv{m, n})
		}
		slices.SortFunc(errs, func(a, b kv) int { return b.n - a.n })
		for i, e := range errs {
			if i == 3 {
				lines = append(lines, fmt.Sprintf("- run %d %s %s: … %d more kinds of error", u.Run, u.Scenario, u.Proxy, len(errs)-3))
				break
			}
			lines = append(lines, fmt.Sprintf("- run %d %s %s: %d× %s", u.Run, u.Scenario, u.Proxy, e.n, e.msg))
		}
	}
	for _, s := range r.Skipped {
		lines = append(lines, "- skipped: "+s)
	}
	if len(lines) > 0 {
		fmt.Fprintf(b, "\n### Notes and errors\n\n%s\n", strings.Join(lines, "\n"))
	}
}
