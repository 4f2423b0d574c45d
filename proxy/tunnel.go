package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy/limit"
	"github.com/wsegress/wsegress/proxy/relay"
)

// tunnel owns one proxy request that may become a tunnel, from admission
// to close: its place at the pending gate, its registration with the
// drain, its slot, the target conn once dialed, the client conn once
// hijacked, and the fields of its log line. Every path (CONNECT, upgrade,
// plain-HTTP forwarding) takes the same steps in the same order:
//
//	admit    pending gate, drain registration, authentication
//	reach    target parsed by the caller, then slot, then resolve + ACL + dial
//	hijack   the client conn (CONNECT and upgrade only)
//	establish / relay / close
//
// and whatever happens, close runs exactly once and releases everything
// the tunnel holds. Nothing else closes its sockets: once they are handed
// to the relay, only the relay's context ends them.
type tunnel struct {
	s *Server
	q *request // dropped once established, so an idle tunnel does not pin the request

	client net.Conn // set by hijack
	target net.Conn // set by reach
	slot   *limit.Slot

	pending bool // holds a place at the pending gate
	entered bool // registered with the drain (Server.enter)
	open    bool // established: tracked, counted in wsegress_tunnels_open
	settled bool // its result is counted in wsegress_tunnels_total

	// keepAlive switches keep-alive on for both sockets once the tunnel is
	// old enough (armKeepAlive); nil when keep-alive is off.
	keepAlive *time.Timer

	// abort, while set, closes client and target if the server is shut
	// down during the handshake after hijack; stopAbort removes it.
	stopAbort func() bool

	status   int   // the answer that established the tunnel; 0: none, no end line
	up, down int64 // bytes moved before the relay took over (pipelined)
	log      endLog
}

// endLog is the part of a request its canonical end line needs.
type endLog struct {
	start  time.Time
	client netip.AddrPort
	via    string
	user   string
	authBy string
	method string
	target acl.Target
	dialed string
	rule   string
	result result // ok, or would_deny or not_websocket (issue 15)
	reason string // why, for a result other than ok
	check  string // the first-bytes check's finding; "" when not checked
}

func (q *request) endLog() endLog {
	l := endLog{start: q.start, client: q.client, via: q.via, user: q.user, authBy: q.authString(), method: q.r.Method,
		target: q.target, dialed: q.dialed, rule: q.rule, result: resultOK, check: q.checked}
	if q.report {
		l.result, l.reason = resultWouldDeny, q.reason
	}
	return l
}

// admit takes a place at the pending gate and a registration with the
// drain, then authenticates. On false it has answered the request and
// released what it took.
func (s *Server) admit(w http.ResponseWriter, q *request) (*tunnel, bool) {
	t := &tunnel{s: s, q: q}
	if !s.pending.TryEnter() {
		s.metrics.LimitRefused(limit.KindPending)
		t.refuse(w, errBusy)
		return nil, false
	}
	t.pending = true
	if !s.enter() {
		t.refuse(w, errShuttingDown)
		return nil, false
	}
	t.entered = true
	if err := s.authenticate(q); err != nil {
		t.refuse(w, err)
		return nil, false
	}
	return t, true
}

// reach takes a slot for target (parseErr: it did not parse) and dials it,
// checking the ACL on every resolved address. On false it has answered
// the request and closed the tunnel.
func (t *tunnel) reach(w http.ResponseWriter, target acl.Target, parseErr error) bool {
	if parseErr != nil {
		t.refuse(w, parseErr)
		return false
	}
	q := t.q
	q.target = target
	slot, err := t.s.acquire(q)
	if err != nil {
		t.refuse(w, err)
		return false
	}
	t.slot = slot
	conn, err := t.s.dial(q)
	if err != nil {
		t.refuse(w, err)
		return false
	}
	t.target = conn
	t.keepAlive = armKeepAlive(q.st.cfg.KeepAlive, connInfoFrom(q.r.Context()).conn, conn)
	return true
}

// hijack takes the client connection from net/http, with the header
// deadlines net/http left on it cleared; the reader holds what the client
// sent behind its request headers. From here until the relay takes over,
// a shutdown closes both conns. On false it has answered the request and
// closed the tunnel.
func (t *tunnel) hijack(w http.ResponseWriter) (*bufio.Reader, bool) {
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.refuse(w, fmt.Errorf("hijack: %w", err))
		return nil, false
	}
	client.SetDeadline(time.Time{})
	t.client = client
	t.stopAbort = context.AfterFunc(t.s.baseCtx, func() {
		t.client.Close()
		t.target.Close()
	})
	return brw.Reader, true
}

// refuse answers the request with err's status (before hijack) and closes
// the tunnel.
func (t *tunnel) refuse(w http.ResponseWriter, err error) {
	t.s.refuse(w, t.q, err)
	t.close(relay.Result{})
}

// refuseRaw is refuse on the hijacked client conn.
func (t *tunnel) refuseRaw(err error) {
	t.s.refuseRaw(t.client, t.q, err)
	t.close(relay.Result{})
}

// establish marks the tunnel open with status (200, or the target's answer
// to an upgrade): it is tracked and will write an end line when it closes.
// Its result is counted when the relay takes it over, or when it closes
// before that (refused by the first-bytes check).
func (t *tunnel) establish(status int) {
	t.status = status
	t.log = t.q.endLog()
	t.q = nil
	t.open = true
	t.s.track(t)
	t.s.metrics.TunnelOpened()
}

// wouldDeny marks an established tunnel as one that a check in report
// mode would have refused: it goes on, logged and counted as would_deny.
func (t *tunnel) wouldDeny(reason string) {
	t.log.result = resultWouldDeny
	if t.log.reason != "" {
		reason = t.log.reason + "; " + reason
	}
	t.log.reason = reason
}

// settle counts the established tunnel's result, once.
func (t *tunnel) settle() {
	if t.open && !t.settled {
		t.settled = true
		t.s.metrics.TunnelResult(t.log.result)
	}
}

// leavePending gives back the place at the pending gate, once.
func (t *tunnel) leavePending() {
	if t.pending {
		t.pending = false
		t.s.pending.Leave()
	}
}

// relay hands both conns to the relay and returns; close runs when the
// relay is done. A shutdown that already closed the conns during the
// handshake ends the tunnel as canceled without starting the relay.
func (t *tunnel) relay() {
	s := t.s
	if !t.stopAbort() {
		t.close(relay.Result{Reason: relay.EndCanceled, Err: context.Cause(s.baseCtx)})
		return
	}
	t.stopAbort = nil
	t.leavePending()
	t.settle()
	// Bytes forwarded before the relay took over count like any others.
	s.countBytes(true, t.up)
	s.countBytes(false, t.down)
	ctx, stopLifetime := s.tunnelContext()
	s.relay.Start(ctx, t.client, t.target, func(res relay.Result) {
		stopLifetime()
		res = lifetimeEnd(res)
		if res.Reason == relay.EndPanic {
			var pe *relay.PanicError
			if errors.As(res.Err, &pe) {
				s.log.Error("relay panic", keyTarget, t.log.target.String(), keyErr, pe.Error(), keyStack, string(pe.Stack))
			}
		}
		t.close(res)
	})
}

// close releases everything the tunnel holds, exactly once: both sockets,
// its slot, its pending place, its tracking and its place in the drain;
// and writes its end line if it got an answer. res says how it ended.
func (t *tunnel) close(res relay.Result) {
	s := t.s
	if t.stopAbort != nil {
		t.stopAbort()
		t.stopAbort = nil
	}
	if t.keepAlive != nil {
		t.keepAlive.Stop()
	}
	if t.client != nil {
		t.client.Close()
	}
	if t.target != nil {
		t.target.Close()
	}
	t.slot.Release()
	t.leavePending()
	if t.open {
		t.settle()
		s.untrack(t)
		s.metrics.TunnelClosed(time.Since(t.log.start))
		s.metrics.TunnelEnded(res.Reason)
	}
	if t.status != 0 {
		res.Up += t.up
		res.Down += t.down
		s.logEnd(t.log, t.status, res)
	}
	if t.entered {
		s.leave()
	}
}

// logEnd writes the canonical line of a request that got its tunnel (or
// its plain-HTTP response).
func (s *Server) logEnd(l endLog, status int, res relay.Result) {
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs, slog.String(keyClient, l.client.String()))
	attrs = appendClientAttrs(attrs, l.client.Addr(), l.via)
	attrs = append(attrs,
		slog.String(keyUser, l.user),
		slog.String(keyAuth, l.authBy),
		slog.String(keyMethod, l.method),
		slog.String(keyTarget, l.target.String()),
		slog.String(keyDialed, l.dialed),
		slog.Int(keyStatus, status),
		slog.String(keyResult, l.result.String()),
		slog.String(keyRule, l.rule),
	)
	if l.reason != "" {
		attrs = append(attrs, slog.String(keyReason, l.reason))
	}
	if l.check != "" {
		attrs = append(attrs, slog.String(keyCheck, l.check))
	}
	attrs = append(attrs,
		slog.Int64(keyBytesUp, res.Up),
		slog.Int64(keyBytesDown, res.Down),
		slog.Duration(keyDuration, time.Since(l.start)),
		slog.String(keyEnd, string(res.Reason)),
	)
	if res.Err != nil {
		attrs = append(attrs, slog.String(keyErr, res.Err.Error()))
	}
	s.log.LogAttrs(s.baseCtx, slog.LevelInfo, "tunnel closed", attrs...)
}
