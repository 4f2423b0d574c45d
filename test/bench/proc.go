package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. The
// kernel exposes 100 on every Linux architecture regardless of CONFIG_HZ.
const clockTicks = 100

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit. The Go runtime
// does this by itself but restores the old soft limit for child processes;
// an explicit Setrlimit turns that restore off, so Squid and tinyproxy
// started from here inherit the raised limit too.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("set RLIMIT_NOFILE to %d: %w", l.Max, err)
	}
	return l.Cur, nil
}

// cpuPlan says which CPU the proxy gets and which the load generator and
// echo server share. Empty strings mean "not pinned".
type cpuPlan struct {
	Proxy string `json:"proxy_cpu"`
	Load  string `json:"load_cpu"`
	Why   string `json:"why,omitempty"`
}

// planCPUs picks the first two CPUs this process may run on; with fewer than
// two, or without taskset, nothing is pinned and the report says why.
func planCPUs(want bool, proxyCPUs string) cpuPlan {
	if !want {
		return cpuPlan{Why: "pinning disabled (-pin=false)"}
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return cpuPlan{Why: "taskset not found"}
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return cpuPlan{Why: "sched_getaffinity: " + err.Error()}
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return cpuPlan{Why: "fewer than two CPUs available"}
	}
	plan := cpuPlan{Proxy: strconv.Itoa(cpus[0]), Load: strconv.Itoa(cpus[1])}
	if proxyCPUs != "" {
		plan.Proxy = proxyCPUs
	}
	return plan
}

// cpuCount counts the CPUs in a taskset-style list ("0", "0,1", "0-3");
// 0 for a list it cannot read.
func cpuCount(list string) int {
	n := 0
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a {
			return 0
		}
		n += b - a + 1
	}
	return n
}

// pinned prefixes argv with taskset when cpu is set.
func pinned(cpu string, argv []string) []string {
	if cpu == "" {
		return argv
	}
	return append([]string{"taskset", "-c", cpu}, argv...)
}

// procSet tracks the children that are running, so that the watchdog can
// end them: Pdeathsig alone does not reach Squid or tinyproxy, because the
// kernel clears it when they drop root.
type procSet struct {
	mu   sync.Mutex // guards live
	live map[*proc]bool
}

// killAll SIGKILLs the process group of every live child.
func (ps *procSet) killAll() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for p := range ps.live {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// proc is a child process started by the benchmark, in its own process
// group so that stop also ends any helpers it forked.
type proc struct {
	set  *procSet
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done

	mu   sync.Mutex // guards tail
	tail []string   // last lines of stderr, for error reports
}

// start starts argv with stderr scanned line by line: each line goes to
// onLine (if non-nil) and to a short tail kept for error messages.
func (ps *procSet) start(name string, argv, env []string, onLine func(string)) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	// Pdeathsig: no orphaned proxy or echo server if the benchmark is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("stderr pipe for %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{set: ps, name: name, cmd: cmd, done: make(chan struct{})}
	ps.mu.Lock()
	if ps.live == nil {
		ps.live = map[*proc]bool{}
	}
	ps.live[p] = true
	ps.mu.Unlock()
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		p.scan(stderr, onLine)
	}()
	go func() {
		<-scanned // Wait closes the pipe; read it all first
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) scan(r io.Reader, onLine func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if onLine != nil {
			onLine(line)
		}
		p.mu.Lock()
		if len(p.tail) == 20 {
			p.tail = p.tail[1:]
		}
		p.tail = append(p.tail, line)
		p.mu.Unlock()
	}
}

// pid is the process started; with taskset in front it is the same PID,
// because taskset execs its command.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// stderrTail returns the last stderr lines joined, for error messages.
func (p *proc) stderrTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, " | ")
}

// exited reports whether the process has ended, with its wait error.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs
// the group. It only ever signals the group this benchmark created.
func (p *proc) stop(grace time.Duration) {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	// Helpers that outlived the leader are still in the group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	p.set.mu.Lock()
	delete(p.set.live, p)
	p.set.mu.Unlock()
}

// treeStats is the resource use of a process and all its descendants.
type treeStats struct {
	CPUTicks uint64 // utime+stime+cutime+cstime, in clockTicks
	RSSKiB   int64  // sum of VmRSS
	FDs      int    // sum of open descriptors
	Procs    int    // processes counted
}

// CPUSeconds converts the tick count to seconds.
func (s treeStats) CPUSeconds() float64 { return float64(s.CPUTicks) / clockTicks }

// statTree reads /proc for root and its descendants. Squid and tinyproxy may
// fork helpers, so the proxy's cost is the whole tree's.
func statTree(root int) (treeStats, error) {
	pids, err := descendants(root)
	if err != nil {
		return treeStats{}, err
	}
	var s treeStats
	for _, pid := range pids {
		own, reaped, _, err := readStat(pid)
		ticks := own + reaped
		if err != nil {
			if pid == root {
				return treeStats{}, err
			}
			continue // a helper that just exited
		}
		s.CPUTicks += ticks
		s.RSSKiB += readRSS(pid)
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			s.FDs += len(ents)
		}
		s.Procs++
	}
	return s, nil
}

// descendants returns root followed by every process below it.
func descendants(root int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		if _, _, ppid, err := readStat(pid); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

// readStat returns the CPU ticks of a process itself (utime+stime) and of
// its reaped children (cutime+cstime), and its parent PID, from
// /proc/PID/stat.
func readStat(pid int) (own, reaped uint64, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// The command name is in parentheses and may contain spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("parse stat of %d: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
	if len(f) < 15 {
		return 0, 0, 0, fmt.Errorf("parse stat of %d: %d fields", pid, len(f))
	}
	ppid, _ = strconv.Atoi(f[1])
	var t [4]uint64
	for j, s := range f[11:15] {
		if t[j], err = strconv.ParseUint(s, 10, 64); err != nil {
			return 0, 0, 0, fmt.Errorf("parse stat of %d: %w", pid, err)
		}
	}
	return t[0] + t[1], t[2] + t[3], ppid, nil
}

// readRSS returns VmRSS in KiB, 0 if unknown.
func readRSS(pid int) int64 {
	v, _ := procStatusField(pid, "VmRSS:")
	n, _ := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	return n
}

func procStatusField(pid int, key string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			return strings.TrimSpace(line[len(key):]), nil
		}
	}
	return "", errors.New(key + " not found")
}

// fdLimit returns the soft "Max open files" of a process, 0 if unknown.
func fdLimit(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); strings.HasPrefix(line, "Max open files") && len(f) >= 4 {
			n, _ := strconv.ParseInt(f[3], 10, 64)
			return n
		}
	}
	return 0
}

// selfExe is the path of this binary, for re-executing subcommands.
func selfExe() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	return filepath.Abs(p)
}
