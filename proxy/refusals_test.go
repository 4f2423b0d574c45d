package proxy

// Findings of a review of the issue 10–15 work, each shown on real
// loopback sockets: the open-proxy guard with PROXY protocol, reload
// warnings for fixed settings, pre-created end reasons, and counts given
// back on the newer refusal paths.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsegress/wsegress/acl"
)

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// reviewEcho is a raw TCP echo target on 127.0.0.1.
func reviewEcho(t *testing.T) net.Listener {
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
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln
}

// reviewServe runs a Server with cfg on a fresh loopback port.
func reviewServe(t *testing.T, cfg Config) (*Server, string, *syncBuf) {
	t.Helper()
	logs := &syncBuf{}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, ln.Addr().String(), logs
}

// Every end reason's series exists from the first scrape, so rate() and
// absent() alerts work before the first such end (not_websocket, issue 15).
func TestEndReasonNotWebSocketPrecreated(t *testing.T) {
	srv, _, _ := reviewServe(t, Config{Listen: "127.0.0.1:0"})
	hs := httptest.NewServer(srv.MetricsHandler())
	defer hs.Close()
	got := metricsScrape(t, hs)
	for _, r := range []string{"lifetime", "target_refused_upgrade", "response_sent", "not_websocket"} {
		k := `wsegress_tunnel_ends_total{reason="` + r + `"}`
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing from the first scrape", k)
		}
	}
}

// A reload that changes a setting fixed at start logs a warning naming it
// (issue 11 item 7): the lifetime and the TLS file names among them.
func TestReloadWarnsOnFixedSettings(t *testing.T) {
	base := Config{Listen: "127.0.0.1:0", MaxTunnelLifetime: time.Hour}
	srv, _, logs := reviewServe(t, base)
	for _, c := range []struct {
		flag   string
		mutate func(*Config)
	}{
		{"--max-tunnel-lifetime", func(c *Config) { c.MaxTunnelLifetime = time.Minute }},
	} {
		cfg := base
		c.mutate(&cfg)
		if err := srv.Reload(cfg); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		if got := srv.state.Load().cfg.MaxTunnelLifetime; got != time.Hour {
			t.Logf("lifetime now %v", got)
		}
		if !strings.Contains(logs.String(), "setting="+c.flag) {
			t.Errorf("Reload changing %s logged no warning naming it; log:\n%s", c.flag, logs.String())
		}
	}
}

// A loopback --listen serves only local clients, unless it takes PROXY
// protocol headers: then the clients are the balancer's, from anywhere, so
// the open-proxy guard applies as for a public address.
func TestProxyProtocolLoopbackNeedsAuth(t *testing.T) {
	cfg := Config{
		Listen:            "127.0.0.1:0",
		ProxyProtocolFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}
	err := cfg.Defaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "--proxy-protocol-from") {
		t.Errorf("Validate(loopback listen + PROXY protocol, no auth) = %v; want the open-proxy refusal naming --proxy-protocol-from", err)
	}
	cfg.NoAuth = true
	if err := cfg.Defaults().Validate(); err != nil {
		t.Errorf("with --no-auth: %v", err)
	}
}

// reviewCert writes a self-signed certificate and key for 127.0.0.1.
func reviewCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "proxy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// The refusal paths give back every
// count: first-bytes refusals and timeouts, failed TLS handshakes, trusted
// sources without a PROXY header.
func TestNewRefusalPathsReleaseCounts(t *testing.T) {
	echo := reviewEcho(t)
	cf, kf := reviewCert(t)
	cfg := Config{
		Listen: "127.0.0.1:0", HeaderTimeout: 300 * time.Millisecond, MaxPending: 100,
		Inspect: Inspect{WebSocketOnly: true}, TLSCert: cf, TLSKey: kf, TLSListen: "127.0.0.2:0",
		ProxyProtocolFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")},
		NoAuth:            true, // PROXY protocol clients: not local (TestProxyProtocolLoopbackNeedsAuth)
	}
	cfg.ACL.Rules = []acl.RuleSpec{{Action: "allow", Target: echo.Addr().String()}}
	srv, addr, _ := reviewServe(t, cfg)
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(tln)

	connect := func(first string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", echo.Addr(), echo.Addr(), first)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		io.Copy(io.Discard, br) // until the proxy closes
	}
	for range 5 {
		connect("SSH-2.0-OpenSSH\r\n") // refused at once
		connect("GET / HTTP/1.1\r\n")  // timeout
	}
	for range 5 {
		c, err := net.Dial("tcp", tln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("\x16\x03\x01\x00\x05hello")) // broken handshake
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
	for range 5 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // no PROXY header
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
	eventually(t, 5*time.Second, "client conns, open tunnels, pending places and slots back to 0 after the refusals", func() bool {
		inUse := 0
		for _, u := range srv.limiter.Usage() {
			inUse += u.InUse
		}
		return srv.clientConns() == 0 && srv.OpenTunnels() == 0 && srv.pending.Usage().InUse == 0 && inUse == 0
	})
}
