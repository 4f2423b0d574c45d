package proxy

import (
	"net"
	"time"
)

// armKeepAlive switches TCP keep-alive on for a tunnel's client and
// target sockets once the tunnel has lived for d (Config.KeepAlive), with
// the options net.Dialer would set at once: idle d, Go's default probe
// interval (15s) and count (9). Stop the returned timer when the tunnel
// closes; nil when d <= 0 (keep-alive off).
//
// Why late: keep-alive is there to end a long-lived tunnel whose peer
// vanished without a FIN or RST, and a probe cannot go out before the
// socket has been idle for d anyway. Setting the options costs four
// setsockopt calls per socket, eight per tunnel, about a sixth of a short
// tunnel's syscalls; a tunnel that ends within d (most short ones) now
// never pays them. A vanished peer is noticed at most d later than with
// the options set at connect time. Listeners and the dialer are set up
// with keep-alive off so that Go does not set them per socket.
func armKeepAlive(d time.Duration, client, target net.Conn) *time.Timer {
	if d <= 0 {
		return nil
	}
	return time.AfterFunc(d, func() { setKeepAlive(d, client, target) })
}

// setKeepAlive switches keep-alive on with idle time d for each conn that
// is TCP underneath; it skips the others.
func setKeepAlive(d time.Duration, conns ...net.Conn) {
	cfg := net.KeepAliveConfig{Enable: true, Idle: d}
	for _, c := range conns {
		if kc, ok := keepAliver(c); ok {
			// An error means the conn is closed: nothing to keep alive.
			_ = kc.SetKeepAliveConfig(cfg)
		}
	}
}

// keepAliveConn is the part of *net.TCPConn that armKeepAlive needs.
type keepAliveConn interface {
	SetKeepAliveConfig(net.KeepAliveConfig) error
}

// keepAliver finds the TCP socket under c, looking through wrappers with a
// NetConn method (*tls.Conn, the listener's conn). ok is false for a conn
// that is not TCP (or is nil).
func keepAliver(c net.Conn) (keepAliveConn, bool) {
	for range 8 { // bound the unwrapping; real stacks are 1-3 deep
		switch cc := c.(type) {
		case keepAliveConn:
			return cc, true
		case interface{ NetConn() net.Conn }:
			c = cc.NetConn()
		default:
			return nil, false
		}
	}
	return nil, false
}
