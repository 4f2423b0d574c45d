package test

import (
	"bufio"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"

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
