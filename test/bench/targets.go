package main

import (
	"fmt"
	"math"
)

// issueRef holds the best peer figures issue 7 quotes, used only when no
// peer ran in this benchmark (the in-run figures are what the targets mean).
var issueRef = map[string]float64{
	"connect/tunnels_per_cpu_s": 5500,
	"bulk/up_mb_per_cpu_s":      3500,
	"bulk/down_mb_per_cpu_s":    3900,
	"bulk/both_mb_per_cpu_s":    1400,
	"bulk/up_share":             0.60,
	"bulk/down_share":           0.60,
	"bulk/both_share":           0.74,
	"echo/msgs_per_cpu_s":       51000,
}

// target is one row of the issue's target table.
type target struct {
	Name     string  `json:"name"`
	Want     string  `json:"want"`
	Measured string  `json:"measured"`
	Value    float64 `json:"value"`
	Status   string  `json:"status"` // "met", "NOT met" or "n/a"
}

// bestPeer returns the highest median of metric among the peers, with the
// peer's name; when no peer ran it falls back to the issue's figure.
func (r *report) bestPeer(sc, metric string) (float64, string) {
	best, who := 0.0, ""
	for _, px := range r.proxyOrder() {
		if !isPeer(px) {
			continue
		}
		if v, ok := r.med(sc, px, metric); ok && v > best {
			best, who = v, px
		}
	}
	if who == "" {
		if v, ok := issueRef[sc+"/"+metric]; ok {
			return v, "issue 7 figure"
		}
	}
	return best, who
}

// computeTargets evaluates issue 7's targets for wsegress on the medians.
func (r *report) computeTargets() {
	add := func(name, want string, v float64, have bool, met bool, measured string) {
		t := target{Name: name, Want: want, Value: v, Measured: measured, Status: "n/a"}
		if have {
			t.Status = map[bool]string{true: "met", false: "NOT met"}[met]
		} else if v == 0 {
			t.Measured = "–"
		}
		r.Targets = append(r.Targets, t)
	}
	ws := pWsegress

	fds, ok := r.med("idle", ws, "fds_per_tunnel")
	add("Idle: fds per tunnel", "≤ 2", fds, ok, fds <= 2.05, fmtNum(fds))
	kib, ok := r.med("idle", ws, "kib_per_tunnel")
	add("Idle: KiB RSS per tunnel"+r.gogcNote(), "≤ 8", kib, ok, kib <= 8, fmtNum(kib))
	add("Idle: KiB RSS per tunnel (ambition)", "≤ 4", kib, ok, kib <= 4, fmtNum(kib))
	// Every run must hold them all: the worst run counts, not the median.
	opened, ok1 := r.worst("idle", ws, "tunnels_opened")
	pings, ok2 := r.worst("idle", ws, "pings_answered")
	n := float64(r.env.opts.idleN)
	held := fmt.Sprintf("worst run: %s opened, %s answered", fmtNum(opened), fmtNum(pings))
	add("Idle: 9,000 tunnels held, all answer pings", "9,000 / 9,000", pings,
		ok1 && ok2 && n >= 9000, opened >= 9000 && pings >= 9000, held+fmt.Sprintf(" (N=%d)", int(n)))

	tps, ok := r.med("connect", ws, "tunnels_per_cpu_s")
	peer, who := r.bestPeer("connect", "tunnels_per_cpu_s")
	add("CONNECT: tunnels per proxy-CPU-second", fmt.Sprintf("≥ %s (2× %s %s)", fmtNum(2*peer), who, fmtNum(peer)),
		tps, ok && peer > 0, tps >= 2*peer, fmt.Sprintf("%s (%.2f× best peer)", fmtNum(tps), ratio(tps, peer)))
	ar, ok := r.med("auth", ws, "auth_ratio")
	add("CONNECT: auth on (bcrypt, cached) vs off", "≥ 0.90", ar, ok, ar >= 0.90, fmtNum(ar))
	lat, ok := r.ratioToDirect("connect", "setup_p50_us")
	add("CONNECT: unloaded setup latency p50 vs direct", "≤ 1.6×", lat, ok, lat <= 1.6, fmtNum(lat)+"×")

	for _, dir := range []string{"up", "down", "both"} {
		m := dir + "_mb_per_cpu_s"
		v, ok := r.med("bulk", ws, m)
		peer, who := r.bestPeer("bulk", m)
		add("Bulk "+dir+": MB per proxy-CPU-second", fmt.Sprintf("≥ %s (1.5× %s %s)", fmtNum(1.5*peer), who, fmtNum(peer)),
			v, ok && peer > 0, v >= 1.5*peer, fmt.Sprintf("%s (%.2f× best peer)", fmtNum(v), ratio(v, peer)))
	}
	for _, dir := range []string{"up", "down", "both"} {
		share, ok := r.ratioToDirect("bulk", dir+"_mb_s")
		peer, who := r.bestPeerShare(dir)
		add("Bulk "+dir+": share of direct", fmt.Sprintf("≥ %s (%s)", fmtNum(peer), who), share, ok && peer > 0,
			share >= peer, fmtNum(share))
	}

	mps, ok := r.med("echo", ws, "msgs_per_cpu_s")
	peer, who = r.bestPeer("echo", "msgs_per_cpu_s")
	add("Echo: messages per proxy-CPU-second", fmt.Sprintf("≥ %s (1.5× %s %s)", fmtNum(1.5*peer), who, fmtNum(peer)),
		mps, ok && peer > 0, mps >= 1.5*peer, fmt.Sprintf("%s (%.2f× best peer)", fmtNum(mps), ratio(mps, peer)))
	p99, ok := r.ratioToDirect("echo", "rtt_p99_us")
	add("Echo: p99 round trip vs direct", "≤ 1.15×", p99, ok, p99 <= 1.15, fmtNum(p99)+"×")
}

// worst is the lowest value of a metric over the runs.
func (r *report) worst(sc, px, metric string) (float64, bool) {
	low, ok := 0.0, false
	for _, u := range r.Results {
		if v, has := u.Metrics[metric]; has && u.Scenario == sc && u.Proxy == px && (!ok || v < low) {
			low, ok = v, true
		}
	}
	return low, ok
}

// bestPeerShare is the best peer's bulk share of direct in one direction.
func (r *report) bestPeerShare(dir string) (float64, string) {
	best, who := 0.0, ""
	for _, px := range r.proxyOrder() {
		if !isPeer(px) {
			continue
		}
		if v, ok := r.ratioOf("bulk", px, dir+"_mb_s"); ok && v > best {
			best, who = v, px
		}
	}
	if who == "" {
		return issueRef["bulk/"+dir+"_share"], "issue 7 figure"
	}
	return best, who
}

// ratioToDirect is wsegress's median of metric over direct's.
func (r *report) ratioToDirect(sc, metric string) (float64, bool) {
	return r.ratioOf(sc, pWsegress, metric)
}

func (r *report) ratioOf(sc, px, metric string) (float64, bool) {
	v, ok1 := r.med(sc, px, metric)
	d, ok2 := r.med(sc, pDirect, metric)
	if !ok1 || !ok2 || d == 0 {
		return 0, false
	}
	return v / d, true
}

func (r *report) gogcNote() string {
	if r.env.opts.gogc == "" {
		return " (GOGC default 100)"
	}
	return " (GOGC=" + r.env.opts.gogc + ")"
}

// fmtNum prints large figures with thousands separators and small ones
// with two decimals.
func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case math.Abs(v) >= 1000:
		s := fmt.Sprintf("%.0f", math.Abs(v))
		out := ""
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				out += ","
			}
			out += string(c)
		}
		if v < 0 {
			out = "-" + out
		}
		return out
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// computeTargets12 evaluates issue 12's targets for wsegress on the
// medians. "More cores must help" needs two runs (with and without
// -proxy-cpus) and is not judged here.
func (r *report) computeTargets12() {
	add := func(name, want string, v float64, have, met bool, measured string) {
		t := target{Name: name, Want: want, Value: v, Measured: measured, Status: "n/a"}
		if have {
			t.Status = map[bool]string{true: "met", false: "NOT met"}[met]
		} else {
			t.Measured = "–"
		}
		r.Targets12 = append(r.Targets12, t)
	}
	ws := pWsegress
	peerNote := func(sc, metric string, lower bool) string {
		v, who := r.bestPeerFor(summaryRow{sc: sc, metric: metric, lower: lower})
		if who == "" {
			return ""
		}
		return fmt.Sprintf(" (best peer %s %s)", who, fmtSys(v))
	}
	v, ok := r.med("echo", ws, "sys_per_unit")
	add("Syscalls per echoed message", "≤ 4.5", v, ok, v <= 4.5, fmtSys(v)+peerNote("echo", "sys_per_unit", true))
	v, ok = r.med("connect", ws, "sys_per_unit")
	add("Syscalls per churned tunnel", "≤ 30", v, ok, v <= 30, fmtSys(v)+peerNote("connect", "sys_per_unit", true))
	for _, c := range []struct{ name, sc, metric string }{
		{"Echo: messages per proxy-core-second", "echo", "msgs_per_cpu_s"},
		{"Churn: tunnels per proxy-core-second", "connect", "tunnels_per_cpu_s"},
	} {
		v, ok := r.med(c.sc, ws, c.metric)
		peer, who := r.bestPeerFor(summaryRow{sc: c.sc, metric: c.metric})
		add(c.name, fmt.Sprintf("≥ 1.3× best peer (%s %s)", who, fmtNum(peer)), v, ok && who != "", v >= 1.3*peer,
			fmt.Sprintf("%s (%.2f×)", fmtNum(v), ratio(v, peer)))
	}
	v, ok = r.ratioToDirect("echo", "rtt_p99_us")
	add("Echo: p99 RTT vs direct", "≤ 1.05×", v, ok, v <= 1.05, fmtNum(v)+"×")
	v, ok = r.ratioToDirect("connect", "setup_p50_us")
	add("Churn: unloaded setup p50 vs direct", "≤ 1.6×", v, ok, v <= 1.6, fmtNum(v)+"×")
	for _, dir := range []string{"up", "down", "both"} {
		m := dir + "_mb_per_cpu_s"
		v, ok := r.med("bulk", ws, m)
		naive, ok2 := r.med("bulk", pGoproxy, m)
		add("Bulk "+dir+": MB per proxy-core-second", fmt.Sprintf("≥ 1.1× goproxy (%s)", fmtNum(naive)), v, ok && ok2,
			v >= 1.1*naive, fmt.Sprintf("%s (%.2f×)", fmtNum(v), ratio(v, naive)))
		s, ok := r.ratioToDirect("bulk", dir+"_mb_s")
		ns, ok2 := r.ratioOf("bulk", pGoproxy, dir+"_mb_s")
		add("Bulk "+dir+": share of direct", fmt.Sprintf("≥ goproxy's (%s)", fmtNum(ns)), s, ok && ok2, s >= ns, fmtNum(s))
	}
	v, ok = r.med("mixed", ws, "echo_p99_us")
	add("Mixed: echo p99 RTT beside bulk", "≤ 20 ms", v, ok, v <= 20000, fmt.Sprintf("%.1f ms", v/1000))
	for _, dir := range []string{"up", "down"} {
		v, ok := r.med("mixed", ws, dir+"_mb_s")
		naive, ok2 := r.med("mixed", pGoproxy, dir+"_mb_s")
		add("Mixed: bulk MB/s "+dir, fmt.Sprintf("≥ goproxy (%s)", fmtNum(naive)), v, ok && ok2, v >= naive, fmtNum(v))
	}
	fds, ok := r.med("idle", ws, "fds_per_tunnel")
	add("Idle: fds per tunnel", "≤ 2", fds, ok, fds <= 2.05, fmtNum(fds))
	kib, ok := r.med("idle", ws, "kib_per_tunnel")
	add("Idle: KiB RSS per tunnel"+r.gogcNote(), "≤ 6", kib, ok, kib <= 6, fmtNum(kib))
	opened, ok1 := r.worst("idle", ws, "tunnels_opened")
	pings, ok2 := r.worst("idle", ws, "pings_answered")
	n := float64(r.env.opts.idleN)
	add("Idle: 9,000 held, all answer pings", "9,000 / 9,000", pings, ok1 && ok2 && n >= 9000, opened >= 9000 && pings >= 9000,
		fmt.Sprintf("worst run: %s opened, %s answered (N=%d)", fmtNum(opened), fmtNum(pings), int(n)))
	ar, ok := r.med("auth", ws, "auth_ratio")
	add("Auth on vs off", "≥ 0.90", ar, ok, ar >= 0.90, fmtNum(ar))
}
