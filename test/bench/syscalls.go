package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sysTotal is the event that counts every syscall; the per-name events
// below break it down, and what they miss shows as "other".
const sysTotal = "raw_syscalls:sys_enter"

// sysNames are the syscalls counted by name, those a relay or CONNECT path
// makes (or that show where time goes: futex, sched_yield, tgkill for the
// Go runtime). Names this kernel has no tracepoint for are left out.
var sysNames = []string{
	"read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
	"splice", "pipe2", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
	"futex", "nanosleep", "sched_yield", "tgkill", "rt_sigreturn", "getpid",
	"setsockopt", "getsockopt", "accept", "accept4", "connect", "socket", "close", "shutdown",
	"getsockname", "getpeername", "fcntl", "ioctl", "poll", "select",
	"madvise", "mmap", "munmap", "clone", "clone3", "openat", "newfstatat",
}

// perfSetup finds perf and the syscall tracepoints, and checks that this
// process may count them. It returns the event list, or a note saying why
// syscalls will not be counted.
func perfSetup(ctx context.Context) (perf string, events []string, note string) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return "", nil, "syscalls not counted: perf not installed (test/bench/run --install installs linux-perf)"
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, perf, "stat", "-x,", "-e", sysTotal, "--", "true").CombinedOutput()
	if err != nil || !strings.Contains(string(out), sysTotal) || strings.Contains(string(out), "<not") {
		return "", nil, fmt.Sprintf("syscalls not counted: `perf stat -e %s` failed here (%v: %.200s); "+
			"tracepoints need root or kernel.perf_event_paranoid <= -1", sysTotal, err, strings.TrimSpace(string(out)))
	}
	have := map[string]bool{}
	list, _ := exec.CommandContext(ctx, perf, "list", "syscalls:sys_enter_*").Output()
	for _, f := range strings.Fields(string(list)) {
		if n, ok := strings.CutPrefix(f, "syscalls:sys_enter_"); ok {
			have[n] = true
		}
	}
	events = []string{sysTotal}
	for _, n := range sysNames {
		if have[n] {
			events = append(events, "syscalls:sys_enter_"+n)
		}
	}
	if len(events) == 1 {
		note = "syscalls counted in total only: perf lists no syscalls:sys_enter_* tracepoints"
	}
	return perf, events, note
}

// sysCounter is one `perf stat` attached to the proxy's process tree with
// its events disabled; enable and disable bracket exactly the timed window
// through perf's control FIFO.
type sysCounter struct {
	p        *proc
	ctl, ack *os.File
	out      string
}

// startSysCounter attaches perf to the proxy tree rooted at root, events
// off. perf itself runs on the load CPU.
func startSysCounter(env *benchEnv, root int) (*sysCounter, error) {
	pids, err := descendants(root)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(env.tmp, "perf-")
	if err != nil {
		return nil, fmt.Errorf("perf temp dir: %w", err)
	}
	ctlPath, ackPath := filepath.Join(dir, "ctl"), filepath.Join(dir, "ack")
	for _, p := range []string{ctlPath, ackPath} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return nil, fmt.Errorf("mkfifo %s: %w", p, err)
		}
	}
	sc := &sysCounter{out: filepath.Join(dir, "stat.csv")}
	// O_RDWR: opening either end of a FIFO alone would block until perf
	// opens the other.
	if sc.ctl, err = os.OpenFile(ctlPath, os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("open perf ctl fifo: %w", err)
	}
	if sc.ack, err = os.OpenFile(ackPath, os.O_RDWR, 0); err != nil {
		sc.ctl.Close()
		return nil, fmt.Errorf("open perf ack fifo: %w", err)
	}
	ps := make([]string, len(pids))
	for i, p := range pids {
		ps[i] = strconv.Itoa(p)
	}
	argv := []string{env.perf, "stat", "-x,", "-D", "-1", "--control", "fifo:" + ctlPath + "," + ackPath,
		"-o", sc.out, "-p", strings.Join(ps, ","), "-e", strings.Join(env.perfEvents, ",")}
	if sc.p, err = env.procs.start("perf", pinned(env.cpus.Load, argv), nil, nil); err != nil {
		sc.close()
		return nil, err
	}
	return sc, nil
}

// command sends "enable" or "disable" and waits for perf's ack.
func (sc *sysCounter) command(cmd string) error {
	if _, err := sc.ctl.WriteString(cmd + "\n"); err != nil {
		return fmt.Errorf("perf %s: %w", cmd, err)
	}
	got := make(chan error, 1)
	go func() {
		_ = sc.ack.SetReadDeadline(time.Now().Add(15 * time.Second))
		line, err := bufio.NewReader(sc.ack).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ack" {
			err = fmt.Errorf("unexpected answer %q", line)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("perf %s: %w (%s)", cmd, err, sc.p.stderrTail())
		}
		return nil
	case <-sc.p.done:
		return fmt.Errorf("perf exited before %s (%v): %s", cmd, sc.p.err, sc.p.stderrTail())
	}
}

// finish disables the events, ends perf and returns the counts by event:
// "total" for every syscall, the bare syscall name otherwise.
func (sc *sysCounter) finish() (map[string]float64, error) {
	defer sc.close()
	err := sc.command("disable")
	_ = syscall.Kill(sc.p.pid(), syscall.SIGINT) // perf prints its counts on SIGINT
	select {
	case <-sc.p.done:
	case <-time.After(10 * time.Second):
		err = errors.Join(err, errors.New("perf did not exit on SIGINT"))
	}
	sc.p.stop(time.Second)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(sc.out)
	if err != nil {
		return nil, fmt.Errorf("read perf output: %w", err)
	}
	counts := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue // "<not counted>", comments
		}
		if f[2] == sysTotal {
			counts["total"] = v
		} else if n, ok := strings.CutPrefix(f[2], "syscalls:sys_enter_"); ok {
			counts[n] = v
		}
	}
	if _, ok := counts["total"]; !ok {
		return nil, fmt.Errorf("perf output has no %s count: %.200s", sysTotal, b)
	}
	return counts, nil
}

func (sc *sysCounter) close() {
	if sc.ctl != nil {
		sc.ctl.Close()
	}
	if sc.ack != nil {
		sc.ack.Close()
	}
}

// setSyscalls records syscall counts per unit of work under prefix:
// sys_per_unit (every syscall), sys_<name>_per_unit, and sys_other_per_unit
// for what the named events did not catch.
func (o *outcome) setSyscalls(prefix string, counts map[string]float64, units float64) {
	if counts == nil || units <= 0 {
		return
	}
	named := 0.0
	for n, v := range counts {
		if n == "total" {
			continue
		}
		named += v
		if v > 0 {
			o.set(prefix+"sys_"+n+"_per_unit", v/units)
		}
	}
	o.set(prefix+"sys_total", counts["total"])
	o.set(prefix+"sys_per_unit", counts["total"]/units)
	if len(counts) > 1 {
		o.set(prefix+"sys_other_per_unit", max(0, counts["total"]-named)/units)
	}
}

// sysBreakdown renders a proxy's median syscalls per unit with the largest
// named parts: "8.1: read 5.9, write 2.0, epoll_pwait 0.1".
func (r *report) sysBreakdown(sc, px, prefix string, top int) string {
	total, ok := r.med(sc, px, prefix+"sys_per_unit")
	if !ok {
		return "–"
	}
	type part struct {
		name string
		v    float64
	}
	var parts []part
	for k, v := range r.Medians[sc][px] {
		rest, ok := strings.CutPrefix(k, prefix+"sys_")
		if !ok {
			continue
		}
		name, ok := strings.CutSuffix(rest, "_per_unit")
		if !ok || name == "" || name == "other" || strings.Contains(name, "sys_") {
			continue
		}
		parts = append(parts, part{name, v})
	}
	slices.SortFunc(parts, func(a, b part) int {
		if a.v != b.v {
			if a.v > b.v {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	var s []string
	for i, p := range parts {
		if i == top || p.v < 0.05*total {
			break
		}
		s = append(s, p.name+" "+fmtSys(p.v))
	}
	if len(s) == 0 {
		return fmtSys(total)
	}
	return fmtSys(total) + ": " + strings.Join(s, ", ")
}

// fmtSys prints a syscall rate with one decimal below 100.
func fmtSys(v float64) string {
	if v >= 100 {
		return fmtNum(v)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
