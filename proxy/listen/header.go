package listen

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pires/go-proxyproto"
)

// headerBufSize is the buffer the PROXY header is read through. v1 needs
// its whole line (at most 107 bytes) in the buffer; v2 refills freely.
// It is what go-proxyproto uses, so at most this many bytes past the header
// are buffered, and the first Read returns them all.
const headerBufSize = 256

// ErrNoHeader is wrapped by the error of a trusted connection that sent
// no PROXY header, or not in time.
var ErrNoHeader = errors.New("no PROXY protocol header")

// decide reads the PROXY header of a connection from a trusted source
// through br, within timeout, and returns the client address to use. It is
// the whole decision for trusted sources (untrusted ones are never read):
//
//  1. No valid v1 or v2 header within timeout: an error; the conn is closed.
//  2. A PROXY (v2) or TCP4/TCP6 (v1) header: its source address.
//  3. A LOCAL (v2) or UNKNOWN (v1) header, or one whose addresses are not
//     TCP (UDP, unix): the socket's peer, as the spec asks of a receiver
//     that cannot use the addresses. The balancer speaks for itself.
func decide(raw net.Conn, br *bufio.Reader, timeout time.Duration) (net.Addr, error) {
	h, err := proxyproto.ReadHeaderTimeout(raw, br, timeout)
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return nil, fmt.Errorf("read PROXY header: %w within %v", ErrNoHeader, timeout)
	case err != nil:
		return nil, fmt.Errorf("read PROXY header: %w", err)
	case h == nil:
		return nil, fmt.Errorf("read PROXY header: %w", ErrNoHeader)
	}
	if h.Command.IsProxy() {
		if src, _, ok := h.TCPAddrs(); ok {
			return src, nil
		}
	}
	return raw.RemoteAddr(), nil
}
