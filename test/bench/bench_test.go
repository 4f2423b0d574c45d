package main

import (
	"strings"
	"testing"
)

func TestCPUCount(t *testing.T) {
	for list, want := range map[string]int{"0": 1, "0,1": 2, "0-3": 4, "0,2-3": 3, "": 0, "a": 0, "3-1": 0, "-1": 0} {
		if got := cpuCount(list); got != want {
			t.Errorf("cpuCount(%q) = %d; want %d", list, got, want)
		}
	}
}

// TestSyscallFigures checks the per-unit figures and the breakdown the
// tables print from perf's counts.
func TestSyscallFigures(t *testing.T) {
	o := newOutcome()
	o.setSyscalls("up_", map[string]float64{"total": 900, "read": 500, "write": 300, "futex": 10}, 100)
	want := map[string]float64{"up_sys_per_unit": 9, "up_sys_read_per_unit": 5, "up_sys_write_per_unit": 3,
		"up_sys_futex_per_unit": 0.1, "up_sys_other_per_unit": 0.9, "up_sys_total": 900}
	for k, v := range want {
		if got, ok := o.Metrics[k]; !ok || got != v {
			t.Errorf("%s = %v (set %v); want %v", k, got, ok, v)
		}
	}
	o.setSyscalls("none_", nil, 100)
	o.setSyscalls("zero_", map[string]float64{"total": 5}, 0)
	for k := range o.Metrics {
		if strings.HasPrefix(k, "none_") || strings.HasPrefix(k, "zero_") {
			t.Errorf("%s set without counts or work", k)
		}
	}
	r := &report{Medians: map[string]map[string]map[string]float64{"bulk": {pWsegress: o.Metrics}}}
	// futex (0.1 of 9) is under 5% of the total and left out.
	if got, want := r.sysBreakdown("bulk", pWsegress, "up_", 4), "9.0: read 5.0, write 3.0"; got != want {
		t.Errorf("sysBreakdown = %q; want %q", got, want)
	}
	if got := r.sysBreakdown("bulk", pSquid, "up_", 4); got != "–" {
		t.Errorf("sysBreakdown without figures = %q; want –", got)
	}
}
