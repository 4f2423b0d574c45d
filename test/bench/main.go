package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// options are the command-line settings; see parseFlags for meanings.
type options struct {
	proxies, scenarios string
	runs               int
	quick              bool
	idleN              int
	connectDur         time.Duration
	connectMax         int
	connectWorkers     int
	latencyN           int
	bulkDur            time.Duration
	echoConns          int
	echoSize           int
	echoDur            time.Duration
	wsegress           string
	jsonPath           string
	pin                bool
	gogc               string
	maxTunnels         int
	bcryptCost         int
	budget             time.Duration
	syscalls           bool
	proxyCPUs          string
	mixedDur           time.Duration
	mixedEcho          int
	mixedRate          int
	mixedBulk          int
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: bench [flags]  (test/bench/run builds wsegress and runs this)\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.proxies, "proxies", "direct,wsegress,squid,tinyproxy,goproxy", "proxies to measure (comma list)")
	fs.StringVar(&o.scenarios, "scenarios", "idle,connect,bulk,echo,mixed,auth", "scenarios to run (comma list)")
	fs.IntVar(&o.runs, "runs", 3, "runs per figure; the table shows medians")
	fs.BoolVar(&o.quick, "quick", false, "one short run (under a minute); explicit flags still win")
	fs.IntVar(&o.idleN, "n", 9000, "idle tunnels to open")
	fs.DurationVar(&o.connectDur, "connect-time", 5*time.Second, "CONNECT-rate window per run")
	fs.IntVar(&o.connectMax, "connect-max", 40000, "CONNECT-rate tunnel count limit per run")
	fs.IntVar(&o.connectWorkers, "connect-workers", 32, "concurrent clients in the CONNECT-rate (churn) test")
	fs.IntVar(&o.latencyN, "latency-n", 500, "sequential setups for the latency figures")
	fs.DurationVar(&o.bulkDur, "bulk-time", 2*time.Second, "bulk window per direction")
	fs.IntVar(&o.echoConns, "echo-tunnels", 256, "held tunnels in the echo test")
	fs.IntVar(&o.echoSize, "echo-size", 128, "echo message size in bytes (echo and mixed scenarios)")
	fs.DurationVar(&o.echoDur, "echo-time", 4*time.Second, "echo window per run")
	fs.StringVar(&o.wsegress, "wsegress", "", "wsegress binary (empty: skip wsegress)")
	fs.StringVar(&o.jsonPath, "json", filepath.Join(os.TempDir(), "wsegress-bench.json"), "where to write all raw figures")
	fs.BoolVar(&o.pin, "pin", true, "pin the proxy to one CPU and load+echo to another with taskset")
	fs.StringVar(&o.gogc, "gogc", "", "GOGC for wsegress (empty: inherit, i.e. default 100)")
	fs.IntVar(&o.maxTunnels, "max-tunnels", 20000, "--max-tunnels for wsegress, MaxClients for tinyproxy")
	fs.IntVar(&o.bcryptCost, "bcrypt-cost", bcrypt.DefaultCost, "bcrypt cost of the auth scenario's user")
	fs.DurationVar(&o.budget, "budget", 9*time.Minute+30*time.Second, "stop starting new measurements after this long")
	fs.BoolVar(&o.syscalls, "syscalls", true, "count the proxy's syscalls in every timed window with perf stat")
	fs.StringVar(&o.proxyCPUs, "proxy-cpus", "", "CPU list for the proxy (taskset -c syntax, e.g. 0,1: the proxy on both cores, sharing one with the load); empty: the first CPU alone")
	fs.DurationVar(&o.mixedDur, "mixed-time", 4*time.Second, "mixed scenario window per run")
	fs.IntVar(&o.mixedEcho, "mixed-echo", 200, "paced echo tunnels in the mixed scenario")
	fs.IntVar(&o.mixedRate, "mixed-rate", 20, "messages per second each paced echo tunnel sends")
	fs.IntVar(&o.mixedBulk, "mixed-bulk", 4, "bulk tunnels (both ways at full speed) in the mixed scenario")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]string{"runs": "1", "n": "2000", "connect-time": "1s", "latency-n": "200",
			"bulk-time": "700ms", "echo-time": "1s", "mixed-time": "1500ms", "budget": "4m"}
		for k, v := range quick {
			if !set[k] {
				_ = fs.Set(k, v)
			}
		}
	}
	if min(o.runs, o.idleN, o.echoConns, o.latencyN, o.connectWorkers, o.connectMax) < 1 || o.echoSize < 1 || o.echoSize > 60000 {
		return nil, errors.New("-runs, -n, -latency-n, -echo-tunnels, -connect-workers, -connect-max must be >= 1 and -echo-size in 1..60000")
	}
	if min(o.connectDur, o.bulkDur, o.echoDur, o.mixedDur, o.budget) <= 0 {
		return nil, errors.New("-connect-time, -bulk-time, -echo-time, -mixed-time and -budget must be > 0")
	}
	if min(o.mixedEcho, o.mixedBulk) < 0 || o.mixedRate < 1 || o.mixedRate > 1000 || o.echoSize < 8 && o.mixedEcho > 0 {
		return nil, errors.New("-mixed-echo and -mixed-bulk must be >= 0, -mixed-rate in 1..1000, and -echo-size >= 8 for the mixed scenario's timestamps")
	}
	if o.proxyCPUs != "" && cpuCount(o.proxyCPUs) == 0 {
		return nil, fmt.Errorf("-proxy-cpus %q: want a CPU list such as 0 or 0,1 or 0-1", o.proxyCPUs)
	}
	return o, nil
}

// benchEnv is what every scenario needs to know about this run.
type benchEnv struct {
	opts       *options
	cpus       cpuPlan
	echo       struct{ WS, Raw string }
	tmp        string
	self       string
	wsegress   string
	squid      string
	tinyproxy  string
	noFile     uint64
	echoPID    int
	procs      procSet  // children to end if the watchdog fires
	skipped    []string // proxies that cannot run here, and why
	htpasswd   string   // bench user's htpasswd file
	authHeader string   // its Proxy-Authorization value; never printed
	perf       string   // perf binary; "" when syscalls are not counted
	perfEvents []string // tracepoints perf counts
	perfNote   string   // why syscalls are not (fully) counted; "" when they are
}

const cpusEnv = "WSEGRESS_BENCH_CPUS"

func main() {
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "echo":
			err = runEchoServer()
		case "goproxy":
			err = runGoproxy()
		default:
			err = runBench(os.Args[1:])
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := runBench(nil); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// runBench is the orchestrator: it pins itself to the load CPU (re-exec
// under taskset), starts the echo server, runs every selected scenario for
// every proxy, and prints the report.
func runBench(args []string) error {
	opts, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cpus, err := pinSelf(opts.pin, opts.proxyCPUs, args)
	if err != nil {
		return err
	}
	env := &benchEnv{opts: opts, cpus: cpus, wsegress: opts.wsegress}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The budget stops new measurements; this deadline cuts a running one
	// short (dials and waits take ctx), and the watchdog ends a run that
	// still hangs. Children die with us (Pdeathsig).
	ctx, cancel := context.WithTimeout(ctx, opts.budget+45*time.Second)
	defer cancel()
	watchdog := time.AfterFunc(opts.budget+90*time.Second, func() {
		fmt.Fprintf(os.Stderr, "bench: watchdog: still running %v after the budget; exiting\n", 90*time.Second)
		env.procs.killAll()
		os.Exit(2)
	})
	defer watchdog.Stop()
	if env.noFile, err = raiseNoFile(); err != nil {
		return err
	}
	if env.self, err = selfExe(); err != nil {
		return err
	}
	if env.tmp, err = os.MkdirTemp("", "wsegress-bench-"); err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(env.tmp)
	_ = os.Chmod(env.tmp, 0o755)
	if err := writeHtpasswd(env); err != nil {
		return err
	}
	echo, err := startEcho(env)
	if err != nil {
		return err
	}
	defer echo.stop(2 * time.Second)
	env.echoPID = echo.pid()

	if opts.syscalls {
		env.perf, env.perfEvents, env.perfNote = perfSetup(ctx)
	} else {
		env.perfNote = "syscalls not counted (-syscalls=false)"
	}
	if env.perfNote != "" {
		fmt.Fprintln(os.Stderr, "bench: note:", env.perfNote)
	}
	proxies := availableProxies(env)
	rep := newReport(env)
	runAll(ctx, env, rep, proxies)
	rep.finish()
	fmt.Print(rep.markdown())
	if err := rep.writeJSON(opts.jsonPath); err != nil {
		return err
	}
	fmt.Printf("\nRaw figures: %s\n", opts.jsonPath)
	return nil
}

// pinSelf re-executes the benchmark under taskset on the load CPU once; the
// plan travels in an environment variable because after pinning this
// process can no longer see the proxy's CPU in its own affinity mask.
func pinSelf(want bool, proxyCPUs string, args []string) (cpuPlan, error) {
	if v := os.Getenv(cpusEnv); v != "" {
		p, l, _ := strings.Cut(v, "/")
		return cpuPlan{Proxy: p, Load: l}, nil
	}
	plan := planCPUs(want, proxyCPUs)
	if plan.Load == "" {
		return plan, nil
	}
	self, err := selfExe()
	if err != nil {
		return plan, err
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return plan, fmt.Errorf("find taskset: %w", err)
	}
	// An empty WSEGRESS_BENCH_CPUS inherited from the caller would shadow
	// the plan (the first of duplicate variables wins).
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, cpusEnv+"=") })
	env = append(env, cpusEnv+"="+plan.Proxy+"/"+plan.Load)
	argv := append([]string{"taskset", "-c", plan.Load, self}, args...)
	return plan, syscall.Exec(taskset, argv, env)
}

// writeHtpasswd creates the auth scenario's user with a random password.
func writeHtpasswd(env *benchEnv) error {
	var raw [12]byte
	_, _ = rand.Read(raw[:])
	pass := hex.EncodeToString(raw[:])
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), env.opts.bcryptCost)
	if err != nil {
		return fmt.Errorf("hash bench password: %w", err)
	}
	env.htpasswd = filepath.Join(env.tmp, "htpasswd")
	if err := os.WriteFile(env.htpasswd, []byte("bench:"+string(hash)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write htpasswd: %w", err)
	}
	env.authHeader = "Basic " + base64.StdEncoding.EncodeToString([]byte("bench:"+pass))
	return nil
}

var readyRE = regexp.MustCompile(`ready ws=(\S+) raw=(\S+)`)

// startEcho starts the echo server process on the load CPU.
func startEcho(env *benchEnv) (*proc, error) {
	type addrs struct{ ws, raw string }
	ready := make(chan addrs, 1)
	p, err := env.procs.start("echo", pinned(env.cpus.Load, []string{env.self, "echo"}), nil, func(line string) {
		if m := readyRE.FindStringSubmatch(line); m != nil {
			ready <- addrs{m[1], m[2]}
		}
	})
	if err != nil {
		return nil, err
	}
	select {
	case a := <-ready:
		env.echo.WS, env.echo.Raw = a.ws, a.raw
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("echo server exited: %s", p.stderrTail())
	case <-time.After(10 * time.Second):
		p.stop(time.Second)
		return nil, errors.New("echo server not ready after 10s")
	}
}
