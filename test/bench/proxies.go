package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Proxy names, in table order.
const (
	pDirect    = "direct"
	pWsegress  = "wsegress"
	pSquid     = "squid"
	pTinyproxy = "tinyproxy"
	pGoproxy   = "goproxy"
)

// isPeer reports whether name is a peer proxy (the "best peer" pool).
func isPeer(name string) bool { return name == pSquid || name == pTinyproxy || name == pGoproxy }

// runningProxy is one started proxy (or the direct baseline, with no proc).
type runningProxy struct {
	name    string
	addr    string // listen address; "" for direct
	proc    *proc
	auth    string   // Proxy-Authorization value clients send; "" for none
	metrics string   // wsegress /metrics address; "" when not served
	notes   []string // remarks for the report

	// countSyscalls makes every timed window count the proxy's syscalls
	// (when perf is available).
	countSyscalls bool
}

func (rp *runningProxy) note(s string) {
	if !slices.Contains(rp.notes, s) {
		rp.notes = append(rp.notes, s)
	}
}

func (rp *runningProxy) dialer() dialer { return dialer{proxy: rp.addr, auth: rp.auth} }

// stats reads the proxy's process tree; zero for direct.
func (rp *runningProxy) stats() (treeStats, error) {
	if rp.proc == nil {
		return treeStats{}, nil
	}
	return statTree(rp.proc.pid())
}

// alive returns an error if the proxy process has exited.
func (rp *runningProxy) alive() error {
	if rp.proc == nil {
		return nil
	}
	if done, err := rp.proc.exited(); done {
		return fmt.Errorf("%s exited (%v): %s", rp.name, err, rp.proc.stderrTail())
	}
	return nil
}

// stop ends the proxy. Squid takes 1.5 s to exit on SIGTERM even with
// shutdown_lifetime 0; it holds no state worth a clean exit here, so it
// gets a short grace before SIGKILL.
func (rp *runningProxy) stop() {
	if rp.proc == nil {
		return
	}
	grace := 3 * time.Second
	if rp.name == pSquid {
		grace = 100 * time.Millisecond
	}
	rp.proc.stop(grace)
}

// proxyOpts are per-measurement switches; they apply to wsegress only.
type proxyOpts struct {
	auth    bool // Basic proxy auth with the bench user
	metrics bool // serve /metrics, for the Go runtime's view of idle tunnels
}

// startProxy starts a fresh instance of the named proxy pinned to the proxy
// CPU and waits until it accepts connections.
func startProxy(env *benchEnv, name string, po proxyOpts) (*runningProxy, error) {
	rp, err := startProxyProc(env, name, po)
	if err == nil && rp.proc != nil {
		rp.settle()
	}
	return rp, err
}

// settle waits until the proxy's process tree has used no CPU for 300 ms
// (at most 5 s), so that start-up work stays out of the first window.
// Squid still works for a moment after its port is open: without this,
// its first window (bulk up) counted 28,000–35,000 close calls and half
// the MB per CPU-second of the later ones.
func (rp *runningProxy) settle() {
	const quiet = 300 * time.Millisecond
	last, err := rp.stats()
	if err != nil {
		return
	}
	since := time.Now()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
		st, err := rp.stats()
		if err != nil {
			return
		}
		if st.CPUTicks != last.CPUTicks || st.Procs != last.Procs {
			last, since = st, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
	}
	rp.note("proxy still busy 5 s after start; measured anyway")
}

func startProxyProc(env *benchEnv, name string, po proxyOpts) (*runningProxy, error) {
	switch name {
	case pDirect:
		return &runningProxy{name: name}, nil
	case pWsegress:
		return startWsegress(env, po)
	case pGoproxy:
		return startListening(env, name, []string{env.self, "goproxy"}, goEnv(env), "")
	case pSquid:
		return startPortProxy(env, name, squidConf, func(conf string) []string {
			return []string{env.squid, "-N", "-f", conf}
		})
	case pTinyproxy:
		return startPortProxy(env, name, tinyproxyConf, func(conf string) []string {
			return []string{env.tinyproxy, "-d", "-c", conf}
		})
	}
	return nil, fmt.Errorf("unknown proxy %q", name)
}

// startWsegress runs "wsegress serve" with the echo ports allowed. If this
// build does not know --max-tunnels yet it retries without it and says so.
func startWsegress(env *benchEnv, po proxyOpts) (*runningProxy, error) {
	args := []string{env.wsegress, "serve", "--listen", "127.0.0.1:0",
		"--allow", env.echo.WS, "--allow", env.echo.Raw, "--log-level", "warn"}
	if po.auth {
		args = append(args, "--htpasswd", env.htpasswd)
	}
	metrics := ""
	if po.metrics {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		metrics = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args = append(args, "--metrics-listen", metrics)
	}
	envv := goEnv(env)
	if env.opts.gogc != "" {
		envv = append(envv, "GOGC="+env.opts.gogc)
	}
	withMax := slices.Concat(args, []string{"--max-tunnels", strconv.Itoa(env.opts.maxTunnels)})
	rp, err := startListening(env, pWsegress, withMax, envv, metrics)
	if err != nil && strings.Contains(err.Error(), "max-tunnels") {
		rp, err = startListening(env, pWsegress, args, envv, metrics)
		if rp != nil {
			rp.notes = append(rp.notes, "--max-tunnels not accepted; ran without it")
		}
	}
	if rp != nil {
		rp.metrics = metrics
		if po.auth {
			rp.auth = env.authHeader
		}
	}
	return rp, err
}

// goEnv sets GOMAXPROCS for the Go proxies to the CPUs they are pinned to.
// The runtime would derive the same from the affinity mask; saying it makes
// the -proxy-cpus variant explicit.
func goEnv(env *benchEnv) []string {
	if n := cpuCount(env.cpus.Proxy); env.cpus.Proxy != "" && n > 0 {
		return []string{"GOMAXPROCS=" + strconv.Itoa(n)}
	}
	return nil
}

// listeningRE matches the proxy's ready line in text or JSON log format.
var listeningRE = regexp.MustCompile(`listening.*?addr"?\s*[=:]\s*"?(127\.0\.0\.1:\d+)`)

// startListening starts a proxy that listens on 127.0.0.1:0 and learns the
// port from its "listening addr=..." log line or, whichever comes first,
// from the process's listening socket in /proc, other than notProxy (the
// metrics listener).
func startListening(env *benchEnv, name string, argv, extraEnv []string, notProxy string) (*runningProxy, error) {
	addrc := make(chan string, 1)
	onLine := func(line string) {
		if m := listeningRE.FindStringSubmatch(line); m != nil {
			select {
			case addrc <- m[1]:
			default:
			}
		}
	}
	p, err := env.procs.start(name, pinned(env.cpus.Proxy, argv), extraEnv, onLine)
	if err != nil {
		return nil, err
	}
	rp := &runningProxy{name: name, proc: p}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		select {
		case addr := <-addrc:
			rp.addr = addr
			return rp, nil
		case <-p.done:
			return nil, fmt.Errorf("%s exited at start (%v): %s", name, p.err, p.stderrTail())
		case <-time.After(20 * time.Millisecond):
		}
		// At --log-level warn wsegress does not log the info-level line.
		if addr := listenAddrOf(p.pid(), notProxy); addr != "" {
			rp.addr = addr
			return rp, nil
		}
	}
	p.stop(time.Second)
	return nil, fmt.Errorf("%s not listening after 15s: %s", name, p.stderrTail())
}

// startPortProxy writes a config for a proxy that needs a fixed port (Squid,
// tinyproxy), starts it and waits until the port accepts.
func startPortProxy(env *benchEnv, name string, conf func(*benchEnv, int) string, argv func(string) []string) (*runningProxy, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(env.tmp, name+"-")
	if err != nil {
		return nil, fmt.Errorf("temp dir for %s: %w", name, err)
	}
	// Squid and tinyproxy drop root for an unprivileged user who must read it.
	_ = os.Chmod(dir, 0o755)
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf(env, port)), 0o644); err != nil {
		return nil, fmt.Errorf("write %s config: %w", name, err)
	}
	p, err := env.procs.start(name, pinned(env.cpus.Proxy, argv(path)), nil, nil)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if done, werr := p.exited(); done {
			return nil, fmt.Errorf("%s exited at start (%v): %s", name, werr, p.stderrTail())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return &runningProxy{name: name, addr: addr, proc: p}, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop(time.Second)
	return nil, fmt.Errorf("%s not accepting on %s after 20s: %s", name, addr, p.stderrTail())
}

// squidConf: CONNECT to the echo ports only, no cache, no logs, enough
// descriptors for 9,000 tunnels (2 each).
func squidConf(env *benchEnv, port int) string {
	return fmt.Sprintf(`http_port 127.0.0.1:%d
acl bench_src src 127.0.0.1/32
acl bench_ports port %s %s
acl CONNECT method CONNECT
http_access allow bench_src CONNECT bench_ports
http_access deny all
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log /dev/null
logfile_rotate 0
pid_filename none
client_db off
max_filedescriptors %d
shutdown_lifetime 0 seconds
`, port, portOf(env.echo.WS), portOf(env.echo.Raw), env.noFile)
}

// tinyproxyConf: the same settings in tinyproxy's terms (a thread per
// client, so MaxClients bounds the tunnels).
func tinyproxyConf(env *benchEnv, port int) string {
	return fmt.Sprintf(`User nobody
Group nogroup
Port %d
Listen 127.0.0.1
Timeout 3600
LogFile "/dev/null"
LogLevel Critical
MaxClients %d
Allow 127.0.0.1
ConnectPort %s
ConnectPort %s
DisableViaHeader Yes
`, port, env.opts.maxTunnels, portOf(env.echo.WS), portOf(env.echo.Raw))
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// freePort asks the kernel for an unused loopback port. Another process
// could take it before the proxy binds; on loopback in a benchmark that
// race is rare, and the start-up check would then fail loudly.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// listenAddrOf finds a loopback TCP socket in LISTEN state owned by pid,
// other than skip.
func listenAddrOf(pid int, skip string) string {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return ""
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// f[1] local "0100007F:0C38", f[3] state (0A = LISTEN), f[9] inode.
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] || !strings.HasPrefix(f[1], "0100007F:") {
			continue
		}
		port, err := strconv.ParseUint(f[1][9:], 16, 16)
		if addr := "127.0.0.1:" + strconv.FormatUint(port, 10); err == nil && addr != skip {
			return addr
		}
	}
	return ""
}

// lookProxyBinary finds a peer's binary in PATH or the usual sbin folders.
func lookProxyBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not installed (run test/bench/run --install)", name)
}
