package inspect

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/wsegress/wsegress/acl"
)

// goHello returns the first flight crypto/tls sends for cfg: the
// ClientHello in its TLS records, captured from the client end of a pipe.
func goHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(c, cfg).Handshake() // fails once s is closed
	}()
	defer func() { s.Close(); c.Close(); <-done }()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []byte
	for {
		msg, _, err := clientHelloMessage(out)
		if err != nil {
			tb.Fatalf("crypto/tls sent something clientHelloMessage refuses: %v", err)
		}
		if msg != nil {
			return out
		}
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(s, hdr); err != nil {
			tb.Fatalf("read record header: %v", err)
		}
		body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
		if _, err := io.ReadFull(s, body); err != nil {
			tb.Fatalf("read record: %v", err)
		}
		out = append(append(out, hdr...), body...)
	}
}

// helloSpec describes a hand-built ClientHello.
type helloSpec struct {
	sni     string   // "" = no server_name extension
	alpn    []string // nil = no ALPN extension
	ech     bool     // add an encrypted_client_hello extension
	grease  bool     // Chrome-like: GREASE suites, groups, versions and extensions
	padding int      // bytes of the padding extension (21); 0 = none
}

// buildHello returns the ClientHello handshake message of spec, shaped like
// Chrome's when grease is set.
func buildHello(spec helloSpec) []byte {
	var b cryptobyte.Builder
	b.AddUint8(handshakeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(0x0303)
		b.AddBytes(make([]byte, 32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			if spec.grease {
				b.AddUint16(0x4a4a)
			}
			for _, cs := range []uint16{0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f} {
				b.AddUint16(cs)
			}
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			ext := func(typ uint16, body func(*cryptobyte.Builder)) {
				b.AddUint16(typ)
				b.AddUint16LengthPrefixed(body)
			}
			empty := func(*cryptobyte.Builder) {}
			if spec.grease {
				ext(0x1a1a, empty)
			}
			if spec.sni != "" {
				ext(extServerName, func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint8(0)
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(spec.sni)) })
					})
				})
			}
			ext(23, empty) // extended_master_secret
			ext(0xff01, func(b *cryptobyte.Builder) { b.AddUint8(0) })
			ext(10, func(b *cryptobyte.Builder) { // supported_groups
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					if spec.grease {
						b.AddUint16(0x6a6a)
					}
					b.AddUint16(0x11ec) // X25519MLKEM768
					b.AddUint16(0x001d) // x25519
				})
			})
			if spec.alpn != nil {
				ext(extALPN, func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						for _, p := range spec.alpn {
							b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
						}
					})
				})
			}
			ext(51, func(b *cryptobyte.Builder) { // key_share
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					if spec.grease {
						b.AddUint16(0x6a6a)
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
					}
					b.AddUint16(0x001d)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
				})
			})
			ext(43, func(b *cryptobyte.Builder) { // supported_versions
				b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
					if spec.grease {
						b.AddUint16(0x7a7a)
					}
					b.AddUint16(0x0304)
					b.AddUint16(0x0303)
				})
			})
			if spec.ech {
				ext(extECH, func(b *cryptobyte.Builder) {
					b.AddUint8(0)       // outer
					b.AddUint16(0x0001) // HKDF-SHA256
					b.AddUint16(0x0001) // AES-128-GCM
					b.AddUint8(0x42)    // config_id
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 144)) })
				})
			}
			if spec.grease {
				ext(0x3a3a, func(b *cryptobyte.Builder) { b.AddUint8(0) })
			}
			if spec.padding > 0 {
				ext(21, func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, spec.padding)) })
			}
		})
	})
	return b.BytesOrPanic()
}

// records wraps a handshake message in TLS records of at most frag payload
// bytes each (0: one record, as long as the message).
func records(msg []byte, frag int) []byte {
	if frag <= 0 {
		frag = len(msg)
	}
	var out []byte
	for len(msg) > 0 {
		n := min(frag, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// feed calls Check on the growing prefix of b, read in chunks of the given
// sizes (cycled; a size < 1 counts as 1), until a verdict or the end of b.
func feed(b []byte, t acl.Target, o Options, sizes ...int) Verdict {
	if len(sizes) == 0 {
		sizes = []int{1}
	}
	n := 0
	for i := 0; ; i++ {
		v := Check(b[:n], t, o)
		if v.Done() || n == len(b) {
			return v
		}
		n = min(len(b), n+max(1, sizes[i%len(sizes)]))
	}
}

func mustTarget(tb testing.TB, s string) acl.Target {
	tb.Helper()
	t, err := acl.ParseTarget(s)
	if err != nil {
		tb.Fatalf("ParseTarget(%q): %v", s, err)
	}
	return t
}

// wsHead is a valid handshake head for host, as gorilla/websocket sends it.
func wsHead(host string, extra ...string) string {
	h := "GET /chat HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: Go-http-client/1.1\r\n" +
		"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\n"
}
