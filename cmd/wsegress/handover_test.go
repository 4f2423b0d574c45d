package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// These tests run the real binary: a handover is an exec, and socket
// activation hands a process its descriptors at start.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// wsegressBinary builds the command once per test run.
func wsegressBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wsegress-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "wsegress")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// echoTarget is a TCP server on 127.0.0.1 that echoes every byte.
func echoTarget(t *testing.T) net.Listener {
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
	return ln
}

// proc is a wsegress process the test started, with its log.
type proc struct {
	cmd  *exec.Cmd
	logs logFile
	done chan error // Wait's result
}

// logFile is where a process and the processes it hands over to log. A
// file, not a pipe: Wait would wait for every holder of a pipe to close
// it, the new process included.
type logFile string

func (l logFile) String() string {
	b, _ := os.ReadFile(string(l))
	return string(b)
}

// start runs cmd with stdout and stderr into one log and ends it (by its
// PID) when the test does.
func start(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := &proc{cmd: cmd, logs: logFile(f.Name()), done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("wsegress log:\n%s", p.logs)
		}
	})
	return p
}

// addrs returns the addresses logged by msg ("listening" or "metrics
// listening"), in order, by any process writing to this log.
func (p *proc) addrs(msg string) []string {
	re := regexp.MustCompile(`msg="?` + msg + `"? addr=(\S+)`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(p.logs.String(), -1) {
		out = append(out, m[1])
	}
	return out
}

// waitLog waits for re to match the log and returns its submatches.
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

// dialTunnel opens a CONNECT tunnel to target through the proxy at addr.
func dialTunnel(addr, target string) (net.Conn, error) {
	t0 := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNECT from %s at %s after %v: %w", c.LocalAddr(), t0.Format("15:04:05.000"), time.Since(t0), err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %s", resp.Status)
	}
	if br.Buffered() > 0 {
		c.Close()
		return nil, errors.New("bytes after the 200")
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// echo sends msg through c and checks it comes back.
func echo(c net.Conn, msg string) error {
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

// TestHandover: SIGUSR2 starts a new process on the same sockets. A
// tunnel open across the handover keeps echoing, connects made while it
// happens all succeed, and the old process exits once its tunnel closed.
func TestHandover(t *testing.T) {
	bin := wsegressBinary(t)
	target := echoTarget(t).Addr().String()
	cert, key, pool := selfSigned(t)
	old := start(t, exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--tls-listen", "127.0.0.2:0", "--tls-cert", cert, "--tls-key", key,
		"--allow", target, "--drain-timeout", "30s", "--log-level", "debug"))
	old.waitLog(t, `msg="metrics listening"`)
	addr := old.waitLog(t, `msg=listening addr=(\S+) tls=false`)[1]
	tlsAddr := old.waitLog(t, `msg=listening addr=(\S+) tls=true`)[1]

	long, err := dialTunnel(addr, target)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	if err := echo(long, "before"); err != nil {
		t.Fatal(err)
	}

	// Connect, echo, close, over and over, from before the signal until the
	// new process has taken over and the old one stopped accepting.
	const workers, atLeast, atMost = 8, 500, 5000
	var (
		connects, failures atomic.Int64
		firstErr           atomic.Value
		stop               atomic.Bool
		wg                 sync.WaitGroup
	)
	deadline := time.Now().Add(60 * time.Second)
	for range workers {
		wg.Go(func() {
			for !stop.Load() && connects.Load() < atMost && time.Now().Before(deadline) {
				n := connects.Add(1)
				c, err := dialTunnel(addr, target)
				if err == nil {
					err = echo(c, "x"+strconv.FormatInt(n, 10))
					c.Close()
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	eventually(t, 10*time.Second, "connects before the signal", func() bool { return connects.Load() > 50 })
	if err := old.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	m := old.waitLog(t, `msg="took over from the previous process" pid=(\d+)`)
	newPID, _ := strconv.Atoi(m[1])
	t.Cleanup(func() {
		// The new process is the old one's child: end it by its PID.
		if p, err := os.FindProcess(newPID); err == nil {
			p.Signal(syscall.SIGKILL)
		}
	})
	old.waitLog(t, `msg="handing over"`)
	atHandover := connects.Load()
	eventually(t, 30*time.Second, "connects after the handover", func() bool {
		return connects.Load() >= max(atLeast, atHandover+100)
	})
	stop.Store(true)
	wg.Wait()
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d connects failed during the handover; first: %v", f, connects.Load(), firstErr.Load())
	}
	t.Logf("%d connects, %d of them after the old process stopped accepting", connects.Load(), connects.Load()-atHandover)

	// The old process keeps its tunnel, and waits for it.
	if err := echo(long, "after"); err != nil {
		t.Fatalf("tunnel across the handover: %v", err)
	}
	select {
	case err := <-old.done:
		t.Fatalf("old process exited with its tunnel open: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	long.Close()
	select {
	case err := <-old.done:
		if err != nil {
			t.Fatalf("old process: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("old process still running after its last tunnel closed")
	}
	old.done <- nil // for the cleanup

	// The new process serves the same addresses, and is ready.
	c, err := dialTunnel(addr, target)
	if err != nil {
		t.Fatalf("after the handover: %v", err)
	}
	if err := echo(c, "new"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	tc, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.2"})
	if err != nil {
		t.Fatalf("--tls-listen after the handover: %v", err)
	}
	fmt.Fprintf(tc, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	if resp, err := http.ReadResponse(bufio.NewReader(tc), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT over TLS after the handover: %v %v", resp, err)
	}
	tc.Close()
	metricsAddr := old.addrs("metrics listening")[0]
	resp, err := http.Get("http://" + metricsAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz of the new process: %s; want 200", resp.Status)
	}
	resp, err = http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^wsegress_handover_total\{result="ok"\} 1$`).Match(b) {
		t.Errorf("new process's metrics lack wsegress_handover_total{result=\"ok\"} 1")
	}
	if p, err := os.FindProcess(newPID); err == nil {
		p.Signal(syscall.SIGTERM)
	}
}

// selfSigned writes a certificate for 127.0.0.2 and its key, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (cert, key string, pool *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "wsegress test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 2)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return cert, key, pool
}

// TestSocketActivation starts the binary as systemd would: listening
// sockets on fds 3 and 4, LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES. It
// serves the proxy and the metrics on them, ignoring --listen.
func TestSocketActivation(t *testing.T) {
	bin := wsegressBinary(t)
	target := echoTarget(t).Addr().String()
	var files []*os.File
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close() // the socket lives on in f, and then in the child
		defer f.Close()
		files = append(files, f)
	}
	// LISTEN_PID must be the server's PID: set it in a shell that then
	// execs the server in its place, as systemd sets it after fork.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`,
		bin, "serve", "--listen", "127.0.0.1:1", "--allow", target, "--drain-timeout", "5s")
	cmd.Env = append(os.Environ(), "LISTEN_FDS=2", "LISTEN_FDNAMES=proxy:metrics")
	cmd.ExtraFiles = files
	p := start(t, cmd)
	for _, f := range files {
		f.Close() // only the child holds them now
	}
	p.waitLog(t, `msg=listening addr=`+regexp.QuoteMeta(addrs[0]))
	p.waitLog(t, `msg="metrics listening" addr=`+regexp.QuoteMeta(addrs[1]))

	c, err := dialTunnel(addrs[0], target)
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(c, "activated"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	resp, err := http.Get("http://" + addrs[1] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %s; want 200", resp.Status)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
		p.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

// TestActivatedRoles: systemd's sockets are sorted by name, then by
// address; a socket that is not a TCP listener is refused.
func TestActivatedRoles(t *testing.T) {
	listen := func(network, addr string) net.Listener {
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	a, b, c, d := listen("tcp", "127.0.0.1:0"), listen("tcp", "127.0.0.1:0"), listen("tcp", "127.0.0.1:0"), listen("tcp", "127.0.0.1:0")
	addrs := map[string]string{roleMetrics: b.Addr().String(), roleTLS: d.Addr().String()}
	tests := []struct {
		name               string
		named              map[string][]net.Listener
		wantProxy, wantTLS []net.Listener
		wantMetrics        []net.Listener
		wantErrMatch       string
	}{
		{"one unnamed", map[string][]net.Listener{"LISTEN_FD_3": {a}}, []net.Listener{a}, nil, nil, ""},
		{"by name", map[string][]net.Listener{"proxy": {a}, "metrics": {c}, "tls": {b}}, []net.Listener{a}, []net.Listener{b}, []net.Listener{c}, ""},
		{"unnamed by address", map[string][]net.Listener{"wsegress.socket": {a, b, c, d}}, []net.Listener{a, c}, []net.Listener{d}, []net.Listener{b}, ""},
		{"name beats address", map[string][]net.Listener{"proxy": {b}}, []net.Listener{b}, nil, nil, ""},
		{"unix socket", map[string][]net.Listener{"proxy": {listen("unix", filepath.Join(t.TempDir(), "s"))}}, nil, nil, nil, "not a TCP listening socket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			roles, err := activatedRoles(tc.named, addrs)
			if tc.wantErrMatch != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrMatch) {
					t.Fatalf("err = %v; want %q", err, tc.wantErrMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			same := func(got, want []net.Listener) bool {
				if len(got) != len(want) {
					return false
				}
				for _, w := range want {
					if !slices.Contains(got, w) {
						return false
					}
				}
				return true
			}
			if !same(roles[roleProxy], tc.wantProxy) || !same(roles[roleTLS], tc.wantTLS) || !same(roles[roleMetrics], tc.wantMetrics) {
				t.Errorf("proxy %v tls %v metrics %v; want %v, %v and %v", roles[roleProxy], roles[roleTLS], roles[roleMetrics], tc.wantProxy, tc.wantTLS, tc.wantMetrics)
			}
		})
	}
}

// TestHandoverFailure: when the new binary does not come up, the handover
// is counted as failed and the old process keeps serving.
func TestHandoverFailure(t *testing.T) {
	b, err := os.ReadFile(wsegressBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "wsegress")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	target := echoTarget(t).Addr().String()
	p := start(t, exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--allow", target))
	metricsAddr := p.waitLog(t, `msg="metrics listening" addr=(\S+)`)[1]
	addr := p.waitLog(t, `msg=listening addr=(\S+)`)[1]
	// The "upgrade" is a binary that exits at once: renamed over the path,
	// as a package manager does (the running process keeps its inode).
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, bin); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, `msg="handover failed; this process keeps serving"`)

	c, err := dialTunnel(addr, target)
	if err != nil {
		t.Fatalf("after a failed handover: %v", err)
	}
	if err := echo(c, "still here"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^wsegress_handover_total\{result="failed"\} 1$`).Match(body) {
		t.Errorf("metrics lack wsegress_handover_total{result=\"failed\"} 1")
	}
	resp, err = http.Get("http://" + metricsAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after a failed handover: %s; want 200", resp.Status)
	}
}
