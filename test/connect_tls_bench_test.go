package test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkConnectTLS measures tunnel churn with TLS to the proxy next to
// plain: each op is connect, (TLS handshake,) CONNECT, 200, one byte
// echoed through the tunnel, close. The proxy runs as its own process (the
// wsegress binary, built here) so its CPU time can be read alone from
// /proc; the metric is tunnels per proxy-CPU-second, as in test/bench.
//
//	plain           no TLS
//	tls13-resumed   TLS 1.3, the client keeps a session cache (what a
//	                client that reconnects does)
//	tls12-resumed   TLS 1.2, session cache
//	tls13-full      TLS 1.3 without a session cache: a full handshake each
//
// Run on an otherwise idle machine:
//
//	go test -run '^$' -bench ConnectTLS -benchtime 5s ./test/
func BenchmarkConnectTLS(b *testing.B) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Skip("needs /proc for the proxy's CPU time")
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "wsegress")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/wsegress").CombinedOutput(); err != nil {
		b.Fatalf("build wsegress: %v\n%s", err, out)
	}
	ca := newTestCA(b, "bench CA")
	_, cert, key := ca.issue(b, dir, "proxy", serverCert("127.0.0.1"))
	echo := echoListener(b)
	plain, tlsAddr := freeAddr(b), freeAddr(b)
	cmd := exec.Command(bin, "serve", "--listen", plain, "--tls-listen", tlsAddr, "--tls-cert", cert, "--tls-key", key,
		"--allow", echo.Addr().String(), "--log-level", "warn")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", tlsAddr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the proxy did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	req := []byte("CONNECT " + echo.Addr().String() + " HTTP/1.1\r\n\r\n")

	for _, bc := range []struct {
		name string
		cfg  *tls.Config // nil: plain
	}{
		{"plain", nil},
		{"tls13-resumed", &tls.Config{RootCAs: ca.pool(), ClientSessionCache: tls.NewLRUClientSessionCache(8)}},
		{"tls12-resumed", &tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(8)}},
		{"tls13-full", &tls.Config{RootCAs: ca.pool()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			addr := plain
			if bc.cfg != nil {
				addr = tlsAddr
			}
			dial := func() (net.Conn, error) { return net.Dial("tcp", addr) }
			if bc.cfg != nil {
				dial = func() (net.Conn, error) { return tls.Dial("tcp", addr, bc.cfg) }
			}
			tunnelVia(b, dial, req) // warm up: the first handshake fills the session cache
			before := procCPU(b, cmd.Process.Pid)
			n := 0
			for b.Loop() {
				tunnelVia(b, dial, req)
				n++
			}
			cpu := procCPU(b, cmd.Process.Pid) - before
			if cpu > 0 {
				b.ReportMetric(float64(n)/cpu.Seconds(), "tunnels/proxy-cpu-s")
			}
		})
	}
}

// tunnelVia is tunnelOnce over a dial function (plain or TLS).
func tunnelVia(b *testing.B, dial func() (net.Conn, error), req []byte) {
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("CONNECT: %v %v", resp, err)
	}
	c.Write([]byte{'x'})
	if _, err := br.ReadByte(); err != nil {
		b.Fatal(err)
	}
}

// procCPU is a process's user plus system CPU time so far.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'. utime and stime are fields 14 and 15, in clock ticks
	// (USER_HZ, 100 on Linux).
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100)
}

func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
