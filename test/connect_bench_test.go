package test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/wsegress/wsegress/proxy"
)

// BenchmarkConnect measures the CONNECT path end to end on loopback:
// connect to the proxy, CONNECT, read the 200, one byte echoed through the
// tunnel, close. auth=on uses a bcrypt user whose check is cached after
// the first request, which is what a busy proxy sees. Compare the two in
// one run:
//
//	go test -run '^$' -bench Connect -benchtime 3s ./test/
func BenchmarkConnect(b *testing.B) {
	for _, authOn := range []bool{false, true} {
		name := "auth=off"
		if authOn {
			name = "auth=on"
		}
		b.Run(name, func(b *testing.B) {
			echo := echoListener(b)
			cfg := proxy.Config{Listen: "127.0.0.1:0"}
			cfg.ACL.Rules = append(cfg.ACL.Rules, allowRule(echo.Addr()))
			var hdr string
			if authOn {
				file := filepath.Join(b.TempDir(), "htpasswd")
				if out, err := exec.Command("htpasswd", "-B", "-C", "10", "-b", "-c", file, "bench", "pw").CombinedOutput(); err != nil {
					b.Skipf("htpasswd: %v %s", err, out)
				}
				cfg.Htpasswd = file
				hdr = "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("bench:pw")) + "\r\n"
			}
			addr := startBenchProxy(b, cfg)
			req := []byte("CONNECT " + echo.Addr().String() + " HTTP/1.1\r\n" + hdr + "\r\n")
			for b.Loop() {
				tunnelOnce(b, addr, req)
			}
		})
	}
}

// tunnelOnce opens one tunnel, echoes one byte through it and closes it.
func tunnelOnce(b *testing.B, addr string, req []byte) {
	c, err := net.Dial("tcp", addr)
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

// startBenchProxy runs a proxy for a benchmark and stops it at cleanup.
func startBenchProxy(b *testing.B, cfg proxy.Config) string {
	b.Helper()
	srv, err := proxy.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown(b.Context()) })
	return ln.Addr().String()
}

// echoListener echoes every connection's bytes until it closes.
func echoListener(b *testing.B) net.Listener {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln
}

// BenchmarkConnectInspect measures tunnel churn with the first-bytes check
// (--websocket-only --sni-check) off and on: connect, CONNECT, a WebSocket
// handshake head (or a ClientHello) as the first flight, echoed back by
// the target, close. The first flight is the same both ways, so the
// difference is the check's cost: a pooled buffer, one parse, a deadline.
//
//	go test -run '^$' -bench ConnectInspect -benchtime 3s -count 5 ./test/
func BenchmarkConnectInspect(b *testing.B) {
	for _, first := range []string{"ws", "tls"} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("first=%s/check=%v", first, on), func(b *testing.B) {
				echo := echoListener(b)
				cfg := proxy.Config{Listen: "127.0.0.1:0"}
				cfg.ACL.Rules = append(cfg.ACL.Rules, allowRule(echo.Addr()))
				cfg.Inspect = proxy.Inspect{WebSocketOnly: on, SNICheck: on, AllowMissingSNI: true}
				addr := startBenchProxy(b, cfg)
				target := echo.Addr().String()
				flight := []byte(wsHandshake(target, "/bench"))
				if first == "tls" {
					flight = benchHello(b)
				}
				req := append([]byte("CONNECT "+target+" HTTP/1.1\r\n\r\n"), flight...)
				cpu0 := cpuTime()
				for b.Loop() {
					churnOnce(b, addr, req, len(flight))
				}
				// CPU per tunnel (client, proxy and target together) is
				// what bounds churn on a busy machine, and unlike ns/op
				// it is barely moved by other load on the host.
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// churnOnce opens one tunnel with req (CONNECT and first flight in one
// write), reads the 200 and the n echoed bytes, and closes it.
func churnOnce(b *testing.B, addr string, req []byte, n int) {
	c, err := net.Dial("tcp", addr)
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
	if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
		b.Fatalf("echo of the first flight: %v", err)
	}
}

// benchHello is a ClientHello from crypto/tls for an IP target (no SNI).
func benchHello(b *testing.B) []byte {
	a, p := net.Pipe()
	defer p.Close()
	go tls.Client(a, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}).Handshake()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(p, hdr); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(p, body); err != nil {
		b.Fatal(err)
	}
	return append(hdr, body...)
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
