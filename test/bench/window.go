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
	sys                *sysCounter // nil: syscalls not counted
}

// windowCPU is what a window measured, in seconds.
type windowCPU struct {
	Wall, Proxy, Load float64
	// Other is CPU time the machine spent on anything but the proxy and
	// the load side (other jobs, steal): the noise behind a figure.
	Other float64
	// Syscalls are the proxy tree's syscalls in the window by name
	// ("total" for all); nil when not counted.
	Syscalls map[string]float64
}

func startWindow(env *benchEnv, rp *runningProxy) (*window, error) {
	w := &window{rp: rp, echoPID: env.echoPID}
	if rp.countSyscalls && env.perf != "" {
		// perf attaches (events off) before the window and is switched on
		// at its start, so its start-up time stays outside.
		sc, err := startSysCounter(env, rp.proc.pid())
		if err == nil {
			if err = sc.command("enable"); err != nil {
				_, _ = sc.finish()
			}
		}
		if err != nil {
			rp.note("syscalls not counted: " + err.Error())
		} else {
			w.sys = sc
		}
	}
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
		if w.sys != nil {
			_, _ = w.sys.finish()
		}
		return windowCPU{}, err
	}
	c := windowCPU{Wall: wall,
		Proxy: float64(st.CPUTicks-w.proxy0) / clockTicks,
		Load:  float64(loadTicks(w.echoPID)-w.load) / clockTicks}
	c.Other = max(0, float64(busyTicks()-w.busy)/clockTicks-c.Proxy-c.Load)
	if w.sys != nil {
		counts, err := w.sys.finish()
		if err != nil {
			w.rp.note("syscalls not counted: " + err.Error())
		}
		c.Syscalls = counts
	}
	return c, nil
}

// add sums two windows (for alternating measurements).
func (c windowCPU) add(d windowCPU) windowCPU {
	s := windowCPU{Wall: c.Wall + d.Wall, Proxy: c.Proxy + d.Proxy, Load: c.Load + d.Load, Other: c.Other + d.Other}
	if c.Syscalls != nil && d.Syscalls != nil {
		s.Syscalls = map[string]float64{}
		for k, v := range c.Syscalls {
			s.Syscalls[k] += v
		}
		for k, v := range d.Syscalls {
			s.Syscalls[k] += v
		}
	}
	return s
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
