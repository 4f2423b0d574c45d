package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestSmoke runs every phase for a second with small counts against a
// freshly built wsegress. It checks that the soak itself works (every row
// is there, the baseline is clean, the stalled readers got tunnels), not
// the proxy's targets: those are the soak's report, not a unit test.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds wsegress and runs it for ~20 s")
	}
	var out bytes.Buffer
	code, err := run([]string{"-duration-per-phase", "1s", "-warmup", "1s", "-recover", "5s",
		"-churners", "1", "-held", "2", "-burst", "20", "-addrs", "5", "-stalled", "10",
		"-slow", "10", "-metrics-conns", "10", "-bcrypt-cost", "4"}, &out)
	if err != nil || code != 0 {
		t.Fatalf("run = %d, %v; output:\n%s", code, err, out.String())
	}
	rep := out.String()
	for _, ph := range phases {
		if !strings.Contains(rep, "| "+ph.name+" |") {
			t.Errorf("report has no row %q:\n%s", ph.name, rep)
		}
	}
	for _, want := range []string{
		"PASS  baseline: good clients never refused",
		"| 200×10 |", // every stalled reader got its tunnel
		"target(s) failed.",
	} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}
