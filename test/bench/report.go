package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// unitResult is one scenario measured on one proxy in one run.
type unitResult struct {
	Run      int     `json:"run"`
	Scenario string  `json:"scenario"`
	Proxy    string  `json:"proxy"`
	Seconds  float64 `json:"seconds"`
	*outcome
}

// report gathers every unit and derives medians and the target table.
type report struct {
	Meta    map[string]any                           `json:"meta"`
	Results []unitResult                             `json:"results"`
	Medians map[string]map[string]map[string]float64 `json:"medians"` // scenario → proxy → metric
	Targets []target                                 `json:"targets"`
	// Targets12 are issue 12's targets; Targets issue 7's.
	Targets12 []target `json:"targets_issue12"`
	Skipped   []string `json:"skipped,omitempty"`

	env   *benchEnv
	start time.Time
}

func newReport(env *benchEnv) *report {
	r := &report{env: env, start: time.Now(), Meta: map[string]any{}}
	m := r.Meta
	m["started"] = r.start.UTC().Format(time.RFC3339)
	m["cpu_model"] = cpuModel()
	m["cpus"] = onlineCPUs()
	m["kernel"] = readTrim("/proc/sys/kernel/osrelease")
	m["go"] = runtime.Version()
	m["pinning"] = env.cpus
	m["loadavg_start"] = readTrim("/proc/loadavg")
	m["nofile_limit"] = env.noFile
	m["gogc_wsegress"] = env.opts.gogc
	m["echo_server"] = env.echo
	m["versions"] = map[string]string{
		pWsegress:  firstLine(env.wsegress, "version"),
		pSquid:     firstLine(env.squid, "-v"),
		pTinyproxy: firstLine(env.tinyproxy, "-v"),
	}
	o := env.opts
	m["settings"] = map[string]any{"runs": o.runs, "idle_n": o.idleN, "connect_time_s": o.connectDur.Seconds(),
		"connect_workers": o.connectWorkers, "latency_n": o.latencyN, "bulk_time_s": o.bulkDur.Seconds(),
		"echo_tunnels": o.echoConns, "echo_size": o.echoSize, "echo_time_s": o.echoDur.Seconds(),
		"bcrypt_cost": o.bcryptCost, "max_tunnels": o.maxTunnels, "proxies": o.proxies, "scenarios": o.scenarios}
	return r
}

func (r *report) add(run int, sc, px string, o *outcome, d time.Duration) {
	r.Results = append(r.Results, unitResult{Run: run, Scenario: sc, Proxy: px, Seconds: d.Seconds(), outcome: o})
}

func (r *report) skip(why string) { r.Skipped = append(r.Skipped, why) }

// finish computes the medians over runs and the targets.
func (r *report) finish() {
	r.Meta["loadavg_end"] = readTrim("/proc/loadavg")
	r.Meta["total_seconds"] = time.Since(r.start).Seconds()
	vals := map[string]map[string]map[string][]float64{}
	for _, u := range r.Results {
		if vals[u.Scenario] == nil {
			vals[u.Scenario] = map[string]map[string][]float64{}
		}
		if vals[u.Scenario][u.Proxy] == nil {
			vals[u.Scenario][u.Proxy] = map[string][]float64{}
		}
		for k, v := range u.Metrics {
			vals[u.Scenario][u.Proxy][k] = append(vals[u.Scenario][u.Proxy][k], v)
		}
	}
	r.Medians = map[string]map[string]map[string]float64{}
	for sc, byProxy := range vals {
		r.Medians[sc] = map[string]map[string]float64{}
		for px, byMetric := range byProxy {
			r.Medians[sc][px] = map[string]float64{}
			for k, xs := range byMetric {
				r.Medians[sc][px][k] = median(xs)
			}
		}
	}
	r.computeTargets()
	r.computeTargets12()
}

// med is the median of a metric, if measured.
func (r *report) med(sc, px, metric string) (float64, bool) {
	v, ok := r.Medians[sc][px][metric]
	return v, ok
}

// proxyOrder lists the proxies that have results, in table order.
func (r *report) proxyOrder() []string {
	var out []string
	for _, px := range []string{pDirect, pWsegress, pSquid, pTinyproxy, pGoproxy} {
		if slices.ContainsFunc(r.Results, func(u unitResult) bool { return u.Proxy == px }) {
			out = append(out, px)
		}
	}
	return out
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// onlineCPUs counts the machine's CPUs; runtime.NumCPU would report only
// the one this pinned process may use.
func onlineCPUs() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "processor") {
			n++
		}
	}
	return n
}

// firstLine runs a binary's version command and keeps its first line.
func firstLine(bin string, args ...string) string {
	if bin == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return "unknown: " + err.Error()
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}
