package main

import (
	"regexp"
	"slices"
	"sort"
	"sync"
	"time"
)

// outcome collects one scenario's figures for one proxy in one run.
type outcome struct {
	Metrics map[string]float64 `json:"metrics"`
	Errors  map[string]int     `json:"errors,omitempty"`
	Notes   []string           `json:"notes,omitempty"`

	mu sync.Mutex // guards Errors while workers run
}

func newOutcome() *outcome { return &outcome{Metrics: map[string]float64{}} }

func (o *outcome) set(k string, v float64) { o.Metrics[k] = v }

// setWindow records a timed window's CPU figures under prefix: shares are
// CPU seconds per wall second (1 = one core busy all the time).
func (o *outcome) setWindow(prefix string, c windowCPU) {
	o.set(prefix+"wall_seconds", c.Wall)
	o.set(prefix+"load_cpu_share", ratio(c.Load, c.Wall))
	o.set(prefix+"other_cpu_share", ratio(c.Other, c.Wall))
	if c.Proxy > 0 {
		o.set(prefix+"proxy_cpu_seconds", c.Proxy)
		o.set(prefix+"proxy_cpu_share", ratio(c.Proxy, c.Wall))
	}
}

// merge copies sub's figures and errors into o under prefix.
func (o *outcome) merge(prefix string, sub *outcome) {
	for k, v := range sub.Metrics {
		o.set(prefix+k, v)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, c := range sub.Errors {
		if o.Errors == nil {
			o.Errors = map[string]int{}
		}
		o.Errors[prefix+k] += c
	}
	o.Notes = append(o.Notes, sub.Notes...)
}

func (o *outcome) note(s string) { o.Notes = append(o.Notes, s) }

// portRE strips port numbers so that errors differing only in ephemeral
// ports are counted together.
var portRE = regexp.MustCompile(`:\d{2,5}\b`)

// fail counts err by its message, ports removed; safe for concurrent use.
func (o *outcome) fail(err error) {
	msg := portRE.ReplaceAllString(err.Error(), ":PORT")
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.Errors == nil {
		o.Errors = map[string]int{}
	}
	if len(o.Errors) < 20 || o.Errors[msg] > 0 {
		o.Errors[msg]++
	} else {
		o.Errors["(other errors)"]++
	}
}

// errorCount is the number of failures recorded.
func (o *outcome) errorCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, c := range o.Errors {
		n += c
	}
	return n
}

// percentiles returns the p-th percentiles (0..100) of ds in microseconds,
// using the nearest-rank method; ds is sorted in place.
func percentiles(ds []time.Duration, ps ...float64) []float64 {
	out := make([]float64, len(ps))
	if len(ds) == 0 {
		return out
	}
	slices.Sort(ds)
	for i, p := range ps {
		rank := int(p/100*float64(len(ds))+0.999999) - 1
		rank = max(0, min(rank, len(ds)-1))
		out[i] = float64(ds[rank].Nanoseconds()) / 1e3
	}
	return out
}

// median of xs (which it sorts); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	m := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[m]
	}
	return (xs[m-1] + xs[m]) / 2
}

// ratio is a/b, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
