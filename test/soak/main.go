package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// options are the command-line settings; see parseFlags.
type options struct {
	wsegress     string
	phase        time.Duration
	warmup       time.Duration
	recover      time.Duration
	phases       string
	churners     int
	held         int
	burst        int
	addrs        int
	stalled      int
	slow         int
	metricsConns int
	bcryptCost   int
	fdSlack      int
	budget       time.Duration
	strict       bool
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.StringVar(&o.wsegress, "wsegress", "", "wsegress binary (empty: go build ./cmd/wsegress of this module)")
	fs.DurationVar(&o.phase, "duration-per-phase", 15*time.Second, "how long each attack (and the baseline) runs")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "good clients alone before each attack (sets that phase's fd baseline)")
	fs.DurationVar(&o.recover, "recover", 30*time.Second, "how long to wait after an attack for fds (and CPU) to come back")
	fs.StringVar(&o.phases, "phases", "baseline,stale,burst,stalled,slow,metrics,guess", "phases to run (comma list)")
	fs.IntVar(&o.churners, "churners", 4, "good clients opening and closing tunnels in a loop")
	fs.IntVar(&o.held, "held", 8, "good tunnels held open and echoing")
	fs.IntVar(&o.burst, "burst", 1000, "concurrent wrong passwords in the bcrypt burst")
	fs.IntVar(&o.addrs, "addrs", 50, "attacker source addresses (127.0.0.10 and up)")
	fs.IntVar(&o.stalled, "stalled", 2000, "stalled-reader tunnels")
	fs.IntVar(&o.slow, "slow", 1000, "slow-header connections, and as many idle-after-407 ones")
	fs.IntVar(&o.metricsConns, "metrics-conns", 1000, "idle connections to the metrics listener")
	fs.IntVar(&o.bcryptCost, "bcrypt-cost", 10, "bcrypt cost of the htpasswd entries")
	fs.IntVar(&o.fdSlack, "fd-slack", 144, "fds above the pre-attack baseline still counted as back: "+
		"the good clients' churn and the relay's bounded spare splice pipes (64 pipes, 128 fds)")
	fs.DurationVar(&o.budget, "budget", 5*time.Minute, "hard stop for the whole run")
	fs.BoolVar(&o.strict, "strict", false, "exit 1 when a target fails")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if min(o.churners, o.held, o.burst, o.stalled, o.slow, o.metricsConns) < 1 || o.addrs < 1 || o.addrs > 200 {
		return nil, errors.New("counts must be >= 1 and -addrs in 1..200")
	}
	if min(o.phase, o.warmup, o.recover, o.budget) <= 0 {
		return nil, errors.New("durations must be > 0")
	}
	for _, k := range strings.Split(o.phases, ",") {
		if phaseByKey(k) == nil {
			return nil, fmt.Errorf("unknown phase %q", k)
		}
	}
	return o, nil
}

// User names in the htpasswd file.
const (
	userGood    = "alice" // the good clients; also the name the burst guesses
	userStale   = "svc"   // the stale client's user
	userGuessed = "bob"   // whose password the guesser tries
	userNew     = "carol" // never logs in from the guessing address before
	userStream  = "eve"   // the stalled readers' (valid) user
)

// env is what every phase needs.
type env struct {
	o            *options
	bin, htpass  string
	pw           map[string]string
	echo, stream string
}

// phase is one row of the report.
type phase struct {
	key, name string
	attack    func(context.Context, *phaseRun) // nil for the baseline
}

var phases = []phase{
	{"baseline", "none (baseline: good clients only)", nil},
	{"stale", "stale password, good clients' address", attackStale},
	{"burst", "bcrypt burst", attackBurst},
	{"stalled", "stalled readers", attackStalled},
	{"slow", "slow headers + idle after 407", attackSlow},
	{"metrics", "idle metrics connections", attackMetrics},
	{"guess", "password guessing, good clients' address", attackGuess},
}

func phaseByKey(k string) *phase {
	for i := range phases {
		if phases[i].key == k {
			return &phases[i]
		}
	}
	return nil
}

func main() {
	code, err := run(os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
	}
	os.Exit(code)
}

// run is the whole program: it writes the report to out, progress to
// stderr, and returns the exit code.
func run(args []string, out io.Writer) (int, error) {
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0, nil
	}
	if err != nil {
		return 2, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.budget)
	defer cancel()
	// A phase that still hangs after the budget: children die with us
	// (Pdeathsig).
	watchdog := time.AfterFunc(o.budget+30*time.Second, func() {
		fmt.Fprintln(os.Stderr, "soak: watchdog: still running 30s after -budget; exiting")
		os.Exit(3)
	})
	defer watchdog.Stop()

	nofile, err := raiseNoFile()
	if err != nil {
		return 1, err
	}
	tmp, err := os.MkdirTemp("", "wsegress-soak-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	e := &env{o: o, bin: o.wsegress, htpass: filepath.Join(tmp, "htpasswd")}
	if e.bin == "" {
		fmt.Fprintln(os.Stderr, "soak: building ./cmd/wsegress")
		if e.bin, err = buildWsegress(tmp); err != nil {
			return 1, err
		}
	}
	users := []string{userGood, userStale, userGuessed, userNew, userStream}
	if e.pw, err = writeHtpasswd(e.htpass, users, o.bcryptCost); err != nil {
		return 1, err
	}
	tg, err := startTargets()
	if err != nil {
		return 1, err
	}
	defer tg.close()
	e.echo, e.stream = tg.echo.Addr().String(), tg.stream.Addr().String()

	fmt.Fprintf(os.Stderr, "soak: RLIMIT_NOFILE %d; phases of %v\n", nofile, o.phase)
	load0 := loadAvg()
	var results []*result
	for _, k := range strings.Split(o.phases, ",") {
		if ctx.Err() != nil {
			break
		}
		ph := phaseByKey(k)
		fmt.Fprintf(os.Stderr, "soak: phase %s\n", ph.key)
		res, err := runPhase(ctx, e, ph)
		if err != nil {
			return 1, fmt.Errorf("phase %s: %w", ph.key, err)
		}
		fmt.Fprintf(os.Stderr, "soak: %s\n", res.line())
		results = append(results, res)
	}
	rep := report(o, args, results, load0+" → "+loadAvg())
	fmt.Fprint(out, rep.text)
	if o.strict && rep.failed > 0 {
		return 1, nil
	}
	return 0, nil
}

// loadAvg is the machine's 1-minute load average and CPU count: timings
// are noise when other jobs load the cores.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return fmt.Sprintf("%s (%d CPUs)", f[0], runtime.NumCPU())
}

// phaseRun is one phase in progress.
type phaseRun struct {
	e        *env
	p        *proxyProc
	att      *tally
	stalledN int // stalled tunnels that were held (stalled phase)

	mu    sync.Mutex // guards notes
	notes []string
}

func (r *phaseRun) note(format string, args ...any) {
	r.mu.Lock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// result is one row of the report.
type result struct {
	ph                     *phase
	good                   *goodStats
	cpu, wall              float64
	fdBase, fdPeak, fdEnd  int
	fdBack                 bool
	recovered              time.Duration // from attack end to fds back
	attacker, notes        string
	stalledN               int
	attackWall, fdPeakTime float64
}

// runPhase starts a fresh proxy, lets the good clients warm up, runs the
// attack while they go on, and waits for fds to come back. A fresh proxy
// per phase keeps one attack's throttle state out of the next row.
func runPhase(ctx context.Context, e *env, ph *phase) (*result, error) {
	p, err := startProxy(e.bin, e.htpass, []string{e.echo, e.stream})
	if err != nil {
		return nil, err
	}
	defer p.stop()
	r := &phaseRun{e: e, p: p, att: &tally{}}
	gctx, stopGood := context.WithCancel(ctx)
	defer stopGood()
	g := &good{proxy: p.addr, target: e.echo, auth: basic(userGood, e.pw[userGood]),
		churners: e.o.churners, held: e.o.held}
	g.start(gctx)

	// Warm-up: the held tunnels open, and the fd baseline is the highest
	// count seen over its last second.
	sleepCtx(ctx, e.o.warmup-time.Second)
	for deadline := time.Now().Add(10 * time.Second); int(g.heldUp.Load()) < e.o.held && time.Now().Before(deadline); {
		sleepCtx(ctx, 50*time.Millisecond)
	}
	if int(g.heldUp.Load()) < e.o.held {
		return nil, fmt.Errorf("good clients: %d of %d held tunnels open after warm-up (%s); proxy: %s",
			g.heldUp.Load(), e.o.held, countList(g.stats.Load().refused), p.stderrTail())
	}
	fdBase := 0
	for range 10 {
		fdBase = max(fdBase, p.fds())
		sleepCtx(ctx, 100*time.Millisecond)
	}
	g.swap()
	res := &result{ph: ph, fdBase: fdBase}

	// The sampler records peak fds from here to the end of recovery.
	t0, cpu0 := time.Now(), p.cpu()
	var peak, cur int
	var peakAt time.Duration
	var smu sync.Mutex
	sctx, stopSampler := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			n := p.fds()
			smu.Lock()
			cur = n
			if n > peak {
				peak, peakAt = n, time.Since(t0)
			}
			smu.Unlock()
			if !sleepCtx(sctx, 100*time.Millisecond) {
				return
			}
		}
	}()

	actx, cancel := context.WithTimeout(ctx, e.o.phase)
	if ph.attack == nil {
		<-actx.Done()
	} else {
		ph.attack(actx, r)
		<-actx.Done() // an attack that ends early still gets a full window
	}
	cancel()
	res.attackWall = time.Since(t0).Seconds()

	// Recovery: fds back within the slack and the proxy's CPU calm (less
	// than a quarter core over 0.5 s, e.g. after a bcrypt backlog).
	tEnd := time.Now()
	for deadline := tEnd.Add(e.o.recover); ctx.Err() == nil; {
		c0 := p.cpu()
		sleepCtx(ctx, 500*time.Millisecond)
		calm := p.cpu()-c0 < 0.125
		smu.Lock()
		n := cur
		smu.Unlock()
		if n >= 0 && n <= fdBase+e.o.fdSlack && calm {
			res.fdBack, res.recovered = true, time.Since(tEnd)
			break
		}
		if time.Now().After(deadline) {
			res.recovered = time.Since(tEnd)
			break
		}
	}
	res.cpu, res.wall = p.cpu()-cpu0, time.Since(t0).Seconds()
	stopSampler()
	<-sampled
	res.fdPeak, res.fdPeakTime, res.fdEnd = peak, peakAt.Seconds(), p.fds()
	stopGood()
	g.wait()
	res.good = g.swap()
	if ph.attack != nil {
		if m := authCounters(p.metrics); m != "" {
			r.note("proxy's %s", m)
		}
	}
	res.attacker, res.stalledN = r.att.String(), r.stalledN
	if res.attacker == "" {
		res.attacker = "—"
	}
	r.mu.Lock()
	res.notes = strings.Join(r.notes, "; ")
	r.mu.Unlock()
	select {
	case <-p.done:
		return nil, fmt.Errorf("wsegress exited during the phase: %s", p.stderrTail())
	default:
	}
	return res, nil
}
