package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestHAProxyFleet runs Debian's HAProxy in TCP mode with send-proxy-v2
// in front of two wsegress binaries that trust it (--proxy-protocol-from
// 127.0.0.1/32), with /readyz on the metrics port as HAProxy's health
// check. Clients from several 127.0.0.x addresses keep tunnels open and
// echoing; one instance is drained with SIGTERM; new tunnels go to the
// other, and the open ones lose no byte. --max-tunnels-per-ip counts the
// clients' addresses, not HAProxy's.
func TestHAProxyFleet(t *testing.T) {
	haproxy := findHAProxy(t)
	bin := buildWsegress(t)
	if out, _ := exec.Command(bin, "serve", "--help").CombinedOutput(); !strings.Contains(string(out), "--proxy-protocol-from") {
		t.Skip("wsegress has no --proxy-protocol-from yet (issue 13 item 1): nothing to put behind HAProxy")
	}
	target := tcpEcho(t)

	const perIP = 2
	var inst [2]*wsProc
	for i := range inst {
		inst[i] = startWsegress(t, bin, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
			// --no-auth: PROXY protocol clients are not local (the open-proxy
			// guard), and this test is about the balancer, not credentials.
			"--allow", target, "--proxy-protocol-from", "127.0.0.1/32", "--no-auth",
			"--max-tunnels-per-ip", strconv.Itoa(perIP), "--drain-timeout", "20s")
	}
	front := freePort(t)
	dir := t.TempDir()
	stats := filepath.Join(dir, "stats.sock")
	cfg := fmt.Sprintf(`global
	maxconn 2000
	stats socket %s mode 600
defaults
	mode tcp
	timeout connect 2s
	timeout client 60s
	timeout server 60s
	timeout check 1s
	retries 3
	option redispatch 1
frontend proxy
	bind %s
	default_backend wsegress
backend wsegress
	balance roundrobin
	option httpchk GET /readyz
	http-check expect status 200
	default-server inter 200ms fall 1 rise 2 send-proxy-v2
	server a %s check port %s
	server b %s check port %s
`, stats, front, inst[0].proxyAddr, port(inst[0].metricsAddr), inst[1].proxyAddr, port(inst[1].metricsAddr))
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(haproxy, "-c", "-f", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	hap := startProc(t, exec.Command(haproxy, "-db", "-f", cfgPath))
	eventuallyErr(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", front)
		if err != nil {
			return fmt.Errorf("haproxy not listening: %v\n%s", err, hap.logs)
		}
		c.Close()
		return nil
	})

	// Long tunnels, perIP from each of four client addresses: more than
	// perIP per instance unless each counts real clients.
	var longs []*echoLoop
	for ip := 2; ip <= 5; ip++ {
		for range perIP {
			c, err := tunnelFrom(fmt.Sprintf("127.0.0.%d", ip), front, target)
			if err != nil {
				t.Fatalf("long tunnel from 127.0.0.%d: %v", ip, err)
			}
			longs = append(longs, startEchoLoop(c))
		}
	}
	defer func() {
		for _, l := range longs {
			l.stop()
		}
	}()
	for i, p := range inst {
		if n := p.metric(t, "wsegress_tunnels_open"); n == 0 {
			t.Errorf("instance %d holds no tunnel: HAProxy did not balance", i)
		}
	}

	// One more client address, 2*perIP+1 tunnels: one instance gets more
	// than perIP of them and refuses the extra.
	var ok, refused int
	var extra []net.Conn
	for range 2*perIP + 1 {
		c, err := tunnelFrom("127.0.0.20", front, target)
		if err != nil {
			refused++
			continue
		}
		ok++
		extra = append(extra, c)
	}
	for _, c := range extra {
		c.Close()
	}
	if ok > 2*perIP || refused == 0 {
		t.Errorf("from one client address: %d tunnels, %d refused; want at most %d (--max-tunnels-per-ip %d on each of 2 instances)", ok, refused, 2*perIP, perIP)
	}
	if ok == 0 {
		t.Errorf("from one client address: every tunnel refused")
	}

	// Drain instance a. HAProxy sees /readyz fail (or the listener gone)
	// and sends new tunnels to b; a keeps its tunnels.
	okBefore := inst[1].metric(t, `wsegress_tunnels_total{result="ok"}`)
	if err := inst[0].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	inst[0].waitLog(t, `msg=draining`)
	eventuallyErr(t, 10*time.Second, func() error {
		if st := serverStatus(stats, "a"); st != "DOWN" {
			return fmt.Errorf("HAProxy has server a %q; want DOWN once its /readyz fails", st)
		}
		return nil
	})
	const fresh = 40
	for i := range fresh {
		src := fmt.Sprintf("127.0.0.%d", 30+i%20)
		c, err := tunnelFrom(src, front, target)
		if err != nil {
			t.Fatalf("new tunnel %d from %s during the drain: %v\nhaproxy log:\n%s", i, src, err, hap.logs)
		}
		if err := echoRaw(c, "fresh"+strconv.Itoa(i)); err != nil {
			t.Fatalf("new tunnel %d: %v", i, err)
		}
		c.Close()
	}
	if got := inst[1].metric(t, `wsegress_tunnels_total{result="ok"}`) - okBefore; got != fresh {
		t.Errorf("instance b took %v of the %d tunnels opened during a's drain; want all", got, fresh)
	}
	for i, l := range longs {
		if err := l.check(); err != nil {
			t.Errorf("long tunnel %d during the drain: %v", i, err)
		}
	}
	// The tunnels end; a, drained, exits.
	for _, l := range longs {
		l.stop()
	}
	for i, l := range longs {
		if err := l.check(); err != nil {
			t.Errorf("long tunnel %d: %v", i, err)
		}
	}
	select {
	case err := <-inst[0].done:
		if err != nil {
			t.Errorf("instance a: %v", err)
		}
		inst[0].done <- nil
	case <-time.After(15 * time.Second):
		t.Fatal("instance a still running after its tunnels closed")
	}
	if s := inst[0].logs.String(); !regexp.MustCompile(`client=127\.0\.0\.([2-9]|\d\d+):\d+ .*via=127\.0\.0\.1`).MatchString(s) {
		t.Errorf("instance a's end lines lack the real client or via:\n%s", s)
	}
}

// serverStatus asks HAProxy's stats socket for the status of a server of
// backend wsegress: UP, DOWN, "UP 1/2"... ("" if it cannot tell).
func serverStatus(sock, server string) string {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, "show stat\n")
	b, _ := io.ReadAll(c)
	// CSV: pxname,svname,...; status is the 18th field.
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) > 17 && f[0] == "wsegress" && f[1] == server {
			return f[17]
		}
	}
	return ""
}

// findHAProxy returns haproxy's path, or skips (fails under CI=true).
func findHAProxy(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("haproxy is not installed; test/clients/install installs it (apt-get install haproxy)")
	}
	t.Skip("haproxy is not installed (apt-get install haproxy, or test/clients/install); CI fails without it")
	return ""
}

var (
	wsegressOnce sync.Once
	wsegressBin  string
	wsegressErr  error
)

// buildWsegress builds the command once per test run.
func buildWsegress(t *testing.T) string {
	t.Helper()
	wsegressOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wsegress-bin-")
		if err != nil {
			wsegressErr = err
			return
		}
		wsegressBin = filepath.Join(dir, "wsegress")
		out, err := exec.Command("go", "build", "-o", wsegressBin, "github.com/wsegress/wsegress/cmd/wsegress").CombinedOutput()
		if err != nil {
			wsegressErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if wsegressErr != nil {
		t.Fatal(wsegressErr)
	}
	return wsegressBin
}

// tcpEcho is a TCP server on 127.0.0.1 that echoes every byte.
func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// proc is a process the test started; its output goes to a file (a pipe
// would keep Wait waiting on anything that inherited it).
type proc struct {
	cmd  *exec.Cmd
	logs fileLog
	done chan error
}

type fileLog string

func (l fileLog) String() string {
	b, _ := os.ReadFile(string(l))
	return string(b)
}

// startProc starts cmd and kills it (by its PID) when the test ends.
func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := &proc{cmd: cmd, logs: fileLog(f.Name()), done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(cmd.Path), p.logs)
		}
	})
	return p
}

func (p *proc) waitLog(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	eventually(t, 20*time.Second, "log "+re, func() bool {
		m = rx.FindStringSubmatch(p.logs.String())
		return m != nil
	})
	return m
}

// wsProc is a wsegress process with its addresses.
type wsProc struct {
	*proc
	proxyAddr, metricsAddr string
}

func startWsegress(t *testing.T, bin string, args ...string) *wsProc {
	t.Helper()
	p := &wsProc{proc: startProc(t, exec.Command(bin, args...))}
	p.metricsAddr = p.waitLog(t, `msg="metrics listening" addr=(\S+)`)[1]
	p.proxyAddr = p.waitLog(t, `msg=listening addr=(\S+)`)[1]
	return p
}

// metric reads one series from the instance's /metrics.
func (p *wsProc) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}

// tunnelFrom opens a CONNECT tunnel to target through proxy, from src.
func tunnelFrom(src, proxyAddr, target string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", proxyAddr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %s", resp.Status)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func echoRaw(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q; want %q", got, msg)
	}
	return nil
}

// echoLoop keeps a tunnel busy: a numbered message every 20ms, each
// checked on its way back, until stop. check reports the first loss.
type echoLoop struct {
	c    net.Conn
	n    atomic.Int64
	err  atomic.Value
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

func startEchoLoop(c net.Conn) *echoLoop {
	l := &echoLoop{c: c, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 3000; i++ { // bounded: a minute at most
			select {
			case <-l.quit:
				return
			case <-tick.C:
			}
			if err := echoRaw(c, fmt.Sprintf("msg-%06d;", i)); err != nil {
				l.err.CompareAndSwap(nil, fmt.Errorf("after %d messages: %w", i, err))
				return
			}
			l.n.Add(1)
		}
	}()
	return l
}

func (l *echoLoop) check() error {
	if err, ok := l.err.Load().(error); ok {
		return err
	}
	return nil
}

func (l *echoLoop) stop() {
	l.once.Do(func() {
		close(l.quit)
		<-l.done
		l.c.Close()
	})
}
