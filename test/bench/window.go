package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// window measures one timed phase: wall time, the proxy tree's CPU, and the
// load side's CPU (this process plus the echo server), so the report can
// show which core was the bottleneck.
type window struct {
	rp                 *runningProxy
	echoPID            int
	t0                 time.Time
	proxy0, load, busy uint64
}

// windowCPU is what a window measured, in seconds.
type windowCPU struct {
	Wall, Proxy, Load float64
	// Other is CPU time the machine spent on anything but the proxy and
	// the load side (other jobs, steal): the noise behind a figure.
	Other float64
}

func startWindow(env *benchEnv, rp *runningProxy) (*window, error) {
	w := &window{rp: rp, echoPID: env.echoPID}
	st, err := rp.stats()
	if err != nil {
		return nil, err
	}
	w.proxy0, w.load, w.busy = st.CPUTicks, loadTicks(w.echoPID), busyTicks()
	w.t0 = time.Now()
	return w, nil
}

// end returns what the window measured.
func (w *window) end() (windowCPU, error) {
	wall := time.Since(w.t0).Seconds()
	st, err := w.rp.stats()
	if err != nil {
		return windowCPU{}, err
	}
	c := windowCPU{Wall: wall,
		Proxy: float64(st.CPUTicks-w.proxy0) / clockTicks,
		Load:  float64(loadTicks(w.echoPID)-w.load) / clockTicks}
	c.Other = max(0, float64(busyTicks()-w.busy)/clockTicks-c.Proxy-c.Load)
	return c, nil
}

// add sums two windows (for alternating measurements).
func (c windowCPU) add(d windowCPU) windowCPU {
	return windowCPU{Wall: c.Wall + d.Wall, Proxy: c.Proxy + d.Proxy, Load: c.Load + d.Load, Other: c.Other + d.Other}
}

// busyTicks is the machine's non-idle CPU time (all CPUs, steal included)
// from the first line of /proc/stat.
func busyTicks() uint64 {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy uint64
	// cpu user nice system idle iowait irq softirq steal
	for i, s := range f {
		if i == 0 || i == 4 || i == 5 || i > 8 {
			continue
		}
		v, _ := strconv.ParseUint(s, 10, 64)
		busy += v
	}
	return busy
}

// loadTicks is the own CPU of this process and the echo server; reaped
// children (stopped proxies) are left out.
func loadTicks(echoPID int) uint64 {
	self, _, _, _ := readStat(os.Getpid())
	echo, _, _, _ := readStat(echoPID)
	return self + echo
}
