package listen

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// conn is an accepted client connection. It holds its slots until Close,
// serves the bytes read past a PROXY header before reading the socket, and
// reports the client address from that header.
//
// It keeps the socket reachable (SyscallConn, CloseWrite) so that the
// proxy's relay can still splice a hijacked conn, but only once no byte
// is buffered here: until then SyscallConn fails and the relay copies
// through Read.
type conn struct {
	net.Conn // the accepted socket
	caps     *Caps
	key      netip.Prefix // per-IP key held; zero if none
	remote   net.Addr     // the real client
	via      net.Addr     // the balancer, if a PROXY header was honoured

	buf      []byte // read past the header, not yet returned; only Read touches it
	buffered atomic.Bool
	closed   atomic.Bool
}

var _ syscall.Conn = (*conn)(nil)

var errBuffered = errors.New("listen: bytes past the PROXY header are still buffered")

// Read returns the bytes buffered past the PROXY header first.
func (c *conn) Read(b []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(b, c.buf)
		c.buf = c.buf[n:]
		if len(c.buf) == 0 {
			c.buf = nil
			c.buffered.Store(false)
		}
		return n, nil
	}
	return c.Conn.Read(b)
}

// RemoteAddr returns the client: from the PROXY header if one was
// honoured, else the socket's peer.
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// Close closes the socket and gives back the conn's slots; only the first
// call gives them back.
func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.caps.leave(c.key)
	}
	return c.Conn.Close()
}

// CloseWrite half-closes the socket, if it can.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// CloseRead shuts the socket's read half, if it can.
func (c *conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}

// SyscallConn gives the socket to code that reads it directly, once no
// byte is buffered here.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if c.buffered.Load() {
		return nil, errBuffered
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// NetConn returns the accepted socket, as tls.Conn.NetConn does. Reading
// it directly skips bytes buffered past a PROXY header.
func (c *conn) NetConn() net.Conn { return c.Conn }

// Via reports the balancer's address for a conn whose client address came
// from a PROXY header: the socket peer that sent the header. It looks
// through wrappers with a NetConn method (such as *tls.Conn). ok is false
// for a conn that came directly, or one not from a Listener.
func Via(nc net.Conn) (addr net.Addr, ok bool) {
	for range 8 { // bound the unwrapping; real stacks are 1-2 deep
		switch c := nc.(type) {
		case *conn:
			return c.via, c.via != nil
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return nil, false
		}
	}
	return nil, false
}
