package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy/relay"
)

// serveConnect runs the CONNECT path (see tunnel for the order of steps),
// then answers 200 and relays. goproxy's CONNECT handling is not used
// because v1.9.2 drops the hijacked bufio.Reader, and with it any bytes
// the client sent right behind its CONNECT headers.
func (s *Server) serveConnect(w http.ResponseWriter, q *request) {
	if q.r.ContentLength != 0 || len(q.r.TransferEncoding) > 0 {
		// A body would become tunnel bytes (chunk framing and all), and
		// net/http does not watch for the client hanging up meanwhile.
		s.refuse(w, q, fmt.Errorf("%w: CONNECT with a body", errBadRequest))
		return
	}
	t, ok := s.admit(w, q)
	if !ok {
		return
	}
	target, err := acl.ParseTarget(q.r.RequestURI)
	if !t.reach(w, target, err) {
		return
	}
	br, ok := t.hijack(w)
	if !ok {
		return
	}
	minor := q.r.ProtoMinor
	c, inspecting := q.check()
	t.establish(http.StatusOK)
	if err := answerConnect(t.client, minor); err != nil {
		t.close(relay.Result{Reason: relay.EndError, Err: err})
		return
	}
	// The bytes the client pipelined behind its CONNECT, which net/http
	// already read into br, go first; after this br is dropped and
	// everything else comes straight from the socket.
	if inspecting {
		if !t.inspectFirstFlight(br, c) {
			return
		}
	} else if t.up, err = forwardBuffered(br, t.target); err != nil {
		t.close(relay.Result{Reason: relay.EndError, Err: err})
		return
	}
	t.relay()
}

// answerConnect writes the 200, mirroring HTTP/1.0 or 1.1.
func answerConnect(client net.Conn, minor int) error {
	line := "HTTP/1.1 200 Connection established\r\n\r\n"
	if minor == 0 {
		line = "HTTP/1.0 200 Connection established\r\n\r\n"
	}
	if _, err := io.WriteString(client, line); err != nil {
		return fmt.Errorf("write 200: %w", err)
	}
	return nil
}

// bufferedReader is the part of *bufio.Reader the hijack path needs.
type bufferedReader interface {
	Buffered() int
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
}

// forwardBuffered writes whatever br holds to dst and empties br.
func forwardBuffered(br bufferedReader, dst net.Conn) (int64, error) {
	n := br.Buffered()
	if n == 0 {
		return 0, nil
	}
	b, _ := br.Peek(n)
	m, err := dst.Write(b)
	br.Discard(m)
	if err != nil {
		return int64(m), fmt.Errorf("forward %d pipelined bytes: %w", n, err)
	}
	return int64(m), nil
}
