package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy/limit"
	"github.com/wsegress/wsegress/proxy/relay"
)

// serveConnect runs the CONNECT path: authenticate, parse the target, take
// a slot, dial (the ACL is checked on every resolved address), then hijack
// and answer 200. goproxy's CONNECT handling is not used because v1.9.2
// drops the hijacked bufio.Reader, and with it any bytes the client sent
// right behind its CONNECT headers.
func (s *Server) serveConnect(w http.ResponseWriter, q *request) {
	if q.r.ContentLength != 0 || len(q.r.TransferEncoding) > 0 {
		// A body would become tunnel bytes (chunk framing and all), and
		// net/http does not watch for the client hanging up meanwhile.
		s.refuse(w, q, fmt.Errorf("%w: CONNECT with a body", ErrBadRequest))
		return
	}
	a, ok := s.admitTunnel(w, q)
	if !ok {
		return
	}
	defer a.done()
	t, err := acl.ParseTarget(q.r.RequestURI)
	target, slot, ok := s.reach(w, q, t, err)
	if !ok {
		return
	}

	client, br, ok := s.hijack(w, q, target, slot)
	if !ok {
		return
	}
	tn := s.newTunnel(q, http.StatusOK, client, target, slot)
	a.handedOff = true
	tn.up, err = s.answerConnect(client, br, target, q.r.ProtoMinor)
	if err != nil {
		s.finish(tn, relay.Result{Reason: relay.EndError, Err: err})
		return
	}
	go s.runTunnel(tn)
}

// answerConnect writes the 200 (mirroring HTTP/1.0 or 1.1) and forwards the
// bytes the client pipelined behind its CONNECT, which net/http already
// read into its buffer. After this the buffer is dropped: everything else
// comes straight from the socket.
func (s *Server) answerConnect(client net.Conn, br bufferedReader, target net.Conn, minor int) (int64, error) {
	line := "HTTP/1.1 200 Connection established\r\n\r\n"
	if minor == 0 {
		line = "HTTP/1.0 200 Connection established\r\n\r\n"
	}
	if _, err := io.WriteString(client, line); err != nil {
		return 0, fmt.Errorf("write 200: %w", err)
	}
	return forwardBuffered(br, target)
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

// tunnel is one established CONNECT tunnel or WebSocket upgrade, with
// what its end needs: its slot and the fields of its log line. It keeps
// nothing of the http.Request, so an idle tunnel does not pin the
// request's headers and buffers for hours.
type tunnel struct {
	client, target net.Conn
	slot           *limit.Slot
	status         int
	up, down       int64 // bytes forwarded before the relay started (pipelined)
	log            endLog
}

// endLog is the part of a request its canonical end line needs.
type endLog struct {
	start  time.Time
	client netip.AddrPort
	user   string
	method string
	target acl.Target
	dialed string
	rule   string
}

func (q *request) endLog() endLog {
	return endLog{start: q.start, client: q.client, user: q.user, method: q.r.Method,
		target: q.target, dialed: q.dialed, rule: q.rule}
}

// admission is what a request that may become a tunnel holds until it
// does: a place at the pending gate and a registration with the drain
// (enter), which the tunnel takes over once established.
type admission struct {
	s         *Server
	handedOff bool // a tunnel owns the drain registration now
}

// admitTunnel takes a pending place and a drain registration, then
// authenticates. On false it has answered the request; otherwise the
// caller defers done.
func (s *Server) admitTunnel(w http.ResponseWriter, q *request) (*admission, bool) {
	if !s.pending.TryEnter() {
		s.metrics.LimitRefused(limit.KindPending)
		s.refuse(w, q, ErrBusy)
		return nil, false
	}
	if !s.enter() {
		s.pending.Leave()
		s.refuse(w, q, ErrShuttingDown)
		return nil, false
	}
	a := &admission{s: s}
	if err := s.authenticate(q); err != nil {
		s.refuse(w, q, err)
		a.done()
		return nil, false
	}
	return a, true
}

// done leaves the pending gate, and the drain unless a tunnel took over.
func (a *admission) done() {
	a.s.pending.Leave()
	if !a.handedOff {
		a.s.leave()
	}
}

// newTunnel lists an established tunnel. From here on finish (directly,
// or at the end of runTunnel) releases everything it holds.
func (s *Server) newTunnel(q *request, status int, client, target net.Conn, slot *limit.Slot) *tunnel {
	t := &tunnel{client: client, target: target, slot: slot, status: status, log: q.endLog()}
	s.track(t)
	s.metrics.TunnelOpened()
	s.metrics.TunnelResult(resultOK)
	return t
}

// runTunnel starts relaying and returns; finish runs when the tunnel ends.
// On Linux an idle tunnel then holds no goroutine at all (see Relay.Start);
// the relay recovers its own panics and ends the tunnel with relay.EndPanic.
func (s *Server) runTunnel(t *tunnel) {
	// Bytes forwarded before the relay took over count like any others.
	if t.up > 0 {
		s.countBytes(true, t.up)
	}
	if t.down > 0 {
		s.countBytes(false, t.down)
	}
	s.relay.Start(s.baseCtx, t.client, t.target, func(res relay.Result) {
		if res.Reason == relay.EndPanic {
			s.log.Error("relay panic", keyTarget, t.log.target.String(), keyErr, res.Err)
		}
		s.finish(t, res)
	})
}

// finish releases what a tunnel holds, exactly once: both sockets, its
// slot, its place in the drain, and writes its end line.
func (s *Server) finish(t *tunnel, res relay.Result) {
	if res.Reason == relay.EndError && errors.Is(res.Err, net.ErrClosed) && s.baseCtx.Err() != nil {
		// Shutdown closed this tunnel's sockets itself, racing the relay's
		// own reaction to the cancelled context: it was cancelled.
		res.Reason, res.Err = relay.EndCanceled, context.Cause(s.baseCtx)
	}
	t.client.Close()
	t.target.Close()
	t.slot.Release()
	s.untrack(t)
	res.Up += t.up
	res.Down += t.down
	s.metrics.TunnelClosed(time.Since(t.log.start))
	s.logEnd(t.log, t.status, res)
	s.leave()
}

// logEnd writes the canonical line of a request that got its tunnel (or
// its plain-HTTP response).
func (s *Server) logEnd(l endLog, status int, res relay.Result) {
	attrs := []slog.Attr{
		slog.String(keyClient, l.client.String()),
		slog.String(keyUser, l.user),
		slog.String(keyMethod, l.method),
		slog.String(keyTarget, l.target.String()),
		slog.String(keyDialed, l.dialed),
		slog.Int(keyStatus, status),
		slog.String(keyResult, resultOK),
		slog.String(keyRule, l.rule),
		slog.Int64(keyBytesUp, res.Up),
		slog.Int64(keyBytesDown, res.Down),
		slog.Duration(keyDuration, time.Since(l.start)),
		slog.String(keyEnd, string(res.Reason)),
	}
	if res.Err != nil {
		attrs = append(attrs, slog.String(keyErr, res.Err.Error()))
	}
	s.log.LogAttrs(s.baseCtx, slog.LevelInfo, "tunnel closed", attrs...)
}
