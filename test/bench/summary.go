package main

import (
	"fmt"
	"strings"
)

// summaryRow is one line of the summary table, issue 12's layout.
type summaryRow struct {
	label, sc, metric string
	lower             bool // lower is better (syscalls, latency)
	vsDirect          bool // show as a multiple of direct; direct shows its own value
	ms                bool // a µs figure shown in ms
	info              bool // context, not a figure to compare: no ratio
}

var summaryRows = []summaryRow{
	{label: "churn: new tunnels per proxy-core-second", sc: "connect", metric: "tunnels_per_cpu_s"},
	{label: "echo: messages per proxy-core-second", sc: "echo", metric: "msgs_per_cpu_s"},
	{label: "bulk up: MB per proxy-core-second", sc: "bulk", metric: "up_mb_per_cpu_s"},
	{label: "bulk down: MB per proxy-core-second", sc: "bulk", metric: "down_mb_per_cpu_s"},
	{label: "bulk both: MB per proxy-core-second", sc: "bulk", metric: "both_mb_per_cpu_s"},
	{label: "mixed: bulk MB per proxy-core-second", sc: "mixed", metric: "mb_per_cpu_s"},
	{label: "syscalls per churned tunnel", sc: "connect", metric: "sys_per_unit", lower: true},
	{label: "syscalls per echoed message", sc: "echo", metric: "sys_per_unit", lower: true},
	{label: "syscalls per MB, bulk up", sc: "bulk", metric: "up_sys_per_unit", lower: true},
	{label: "syscalls per MB, bulk down", sc: "bulk", metric: "down_sys_per_unit", lower: true},
	{label: "syscalls per MB, bulk both", sc: "bulk", metric: "both_sys_per_unit", lower: true},
	{label: "syscalls per MB, mixed", sc: "mixed", metric: "sys_per_unit", lower: true},
	{label: "unloaded setup p50 (× direct)", sc: "connect", metric: "setup_p50_us", lower: true, vsDirect: true},
	{label: "echo RTT p99 (× direct)", sc: "echo", metric: "rtt_p99_us", lower: true, vsDirect: true},
	// Mixed figures stay absolute: the target is absolute (p99 ≤ 20 ms),
	// and a proxy that moves less bulk leaves the shared load CPU freer,
	// so "× direct" would flatter it.
	{label: "mixed: echo RTT p50 (ms)", sc: "mixed", metric: "echo_p50_us", lower: true, ms: true},
	{label: "mixed: echo RTT p99 (ms)", sc: "mixed", metric: "echo_p99_us", lower: true, ms: true},
	{label: "mixed: bulk MB/s up", sc: "mixed", metric: "up_mb_s"},
	{label: "mixed: bulk MB/s down", sc: "mixed", metric: "down_mb_s"},
	// Noise: CPU (in cores) the machine spent on other jobs in the window.
	{label: "others' CPU in the churn window (cores)", sc: "connect", metric: "other_cpu_share", info: true},
	{label: "others' CPU in the echo window (cores)", sc: "echo", metric: "other_cpu_share", info: true},
	{label: "others' CPU in the bulk both window (cores)", sc: "bulk", metric: "both_other_cpu_share", info: true},
	{label: "others' CPU in the mixed window (cores)", sc: "mixed", metric: "other_cpu_share", info: true},
}

// summary writes the table the figures use: one row per figure,
// one column per proxy, and wsegress against the best peer (the highest
// figure, or the lowest where lower is better).
func (r *report) summary(b *strings.Builder) {
	pxs := r.proxyOrder()
	if len(pxs) == 0 {
		return
	}
	fmt.Fprintf(b, "\n### Summary (medians; per proxy-core-second = per second of the proxy's CPU time)\n\n| figure |")
	for _, px := range pxs {
		fmt.Fprintf(b, " %s |", px)
	}
	b.WriteString(" wsegress ÷ best peer |\n| --- |" + strings.Repeat(" ---: |", len(pxs)+1) + "\n")
	for _, row := range summaryRows {
		var cells []string
		any := false
		for _, px := range pxs {
			v, ok := r.cellValue(row, px)
			switch {
			case !ok:
				cells = append(cells, "–")
			case row.vsDirect && px != pDirect:
				cells = append(cells, fmt.Sprintf("%.2f×", v))
				any = true
			case row.vsDirect && strings.HasSuffix(row.metric, "_us"):
				cells = append(cells, fmtNum(v)+" µs")
				any = true
			case row.ms:
				cells = append(cells, fmt.Sprintf("%.1f", v/1000))
				any = true
			case strings.Contains(row.metric, "sys_"):
				cells = append(cells, fmtSys(v))
				any = true
			default:
				cells = append(cells, fmtNum(v))
				any = true
			}
		}
		if !any {
			continue
		}
		vs := "–"
		if best, who := r.bestPeerFor(row); who != "" && !row.info {
			if w, ok := r.cellValue(row, pWsegress); ok && best > 0 {
				vs = fmt.Sprintf("%.2f (vs %s)", w/best, who)
			}
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", row.label, strings.Join(cells, " | "), vs)
	}
}

// cellValue is a proxy's median for the row: as a multiple of direct for
// vsDirect rows (direct itself keeps its own value). Direct has no
// per-core or syscall figures: there is no proxy.
func (r *report) cellValue(row summaryRow, px string) (float64, bool) {
	if row.vsDirect && px != pDirect {
		return r.ratioOf(row.sc, px, row.metric)
	}
	return r.med(row.sc, px, row.metric)
}

// bestPeerFor is the best peer's value for a row and the peer's name.
func (r *report) bestPeerFor(row summaryRow) (float64, string) {
	best, who := 0.0, ""
	for _, px := range r.proxyOrder() {
		if !isPeer(px) {
			continue
		}
		v, ok := r.cellValue(row, px)
		if !ok || v <= 0 {
			continue
		}
		if who == "" || (row.lower && v < best) || (!row.lower && v > best) {
			best, who = v, px
		}
	}
	return best, who
}
