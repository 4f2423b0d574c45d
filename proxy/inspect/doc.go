// Package inspect decides, from the first bytes a client sends into a
// CONNECT tunnel, whether the tunnel carries what the policy allows: a
// WebSocket handshake (RFC 6455) whose Host names the CONNECT target, or a TLS
// ClientHello whose SNI does. It is pure: no I/O, no clock, no logging.
// ClientHellos are parsed with golang.org/x/crypto/cryptobyte (crypto/tls
// exposes no parser); the HTTP head with a small bounded parser here.
package inspect
