package tlsconf

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// benchServer accepts on 127.0.0.1 and, for each connection, completes the
// handshake (when cfg is non-nil), writes one byte and closes.
func benchServer(b *testing.B, cfg *tls.Config) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if cfg != nil {
					c = tls.Server(c, cfg)
				}
				c.Write([]byte{'x'}) // handshakes first for TLS
			}()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// benchConnect runs b.Loop connections: dial, (handshake,) read a byte, close.
func benchConnect(b *testing.B, addr string, cfg *tls.Config, wantResumed bool) {
	b.Helper()
	buf := make([]byte, 1)
	for b.Loop() {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c := nc
		var tc *tls.Conn
		if cfg != nil {
			tc = tls.Client(nc, cfg)
			c = tc
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		if tc != nil && tc.ConnectionState().DidResume != wantResumed {
			b.Fatalf("DidResume = %v; want %v", tc.ConnectionState().DidResume, wantResumed)
		}
		c.Close()
	}
}

func benchStore(b *testing.B) (*Store, *ca) {
	b.Helper()
	root := newCA(b, "root")
	s, err := New(writeFiles(b, root.server(b, "server"), nil).options())
	if err != nil {
		b.Fatal(err)
	}
	return s, root
}

// BenchmarkHandshakePlain is the baseline: a TCP connection on loopback
// with one byte read, no TLS.
func BenchmarkHandshakePlain(b *testing.B) {
	benchConnect(b, benchServer(b, nil), nil, false)
}

// BenchmarkHandshakeFull is a full handshake (ECDSA P-256 certificate,
// Go's default key exchange) per connection, both ends in this process.
func BenchmarkHandshakeFull(b *testing.B) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		b.Run(tls.VersionName(v), func(b *testing.B) {
			s, root := benchStore(b)
			addr := benchServer(b, s.ServerConfig())
			benchConnect(b, addr, &tls.Config{RootCAs: root.pool(), ServerName: "proxy.test", MaxVersion: v}, false)
		})
	}
}

// BenchmarkHandshakeResumed resumes a session from a ticket on every
// connection after the first: the cost for a reconnecting client with a
// session cache. TLS 1.2 resumption skips the key exchange; TLS 1.3
// resumption (psk_dhe_ke, the only mode Go offers) still does one and
// saves only the certificate signature and its verification.
func BenchmarkHandshakeResumed(b *testing.B) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		b.Run(tls.VersionName(v), func(b *testing.B) {
			s, root := benchStore(b)
			addr := benchServer(b, s.ServerConfig())
			cfg := &tls.Config{
				RootCAs: root.pool(), ServerName: "proxy.test", MaxVersion: v,
				ClientSessionCache: tls.NewLRUClientSessionCache(1),
			}
			if _, err := dial(addr, cfg); err != nil { // primes the cache
				b.Fatal(err)
			}
			benchConnect(b, addr, cfg, true)
		})
	}
}
