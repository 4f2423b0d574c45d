package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy/inspect"
	"github.com/wsegress/wsegress/proxy/relay"
)

// Reasons of a first-bytes check that ended without a verdict from
// package inspect, beside inspect.Reason's.
const (
	reasonTimeout    = "timeout"    // no verdict within --header-timeout
	reasonIncomplete = "incomplete" // the client closed or failed mid first flight
)

// endNotWebSocket: the first-bytes check refused the tunnel; no byte
// reached the target.
const endNotWebSocket relay.EndReason = "not_websocket"

// check is how a request's tunnel is inspected (issue 15).
type check struct {
	opts    inspect.Options
	report  bool          // --inspect-mode report
	timeout time.Duration // --header-timeout, from the 200
}

// check returns how the request's tunnel is inspected, and false when it
// is not: no --websocket-only or --sni-check, and the allow rule has no
// websocket_only. It needs the ACL decision (wsOnly), so it runs after
// the dial.
func (q *request) check() (check, bool) {
	ic := q.st.cfg.Inspect
	c := check{
		opts:    inspect.Options{AllowMissingSNI: ic.AllowMissingSNI},
		report:  ic.Mode == InspectReport,
		timeout: q.st.cfg.HeaderTimeout,
	}
	switch {
	case ic.WebSocketOnly || q.wsOnly:
		c.opts.Mode = inspect.WebSocketOnly
	case ic.SNICheck:
		c.opts.Mode = inspect.SNICheck
	default:
		return c, false
	}
	return c, true
}

// firstFlights holds the buffers first flights are read into: a tunnel
// borrows one only until its verdict, so idle tunnels hold none.
var firstFlights = sync.Pool{New: func() any {
	b := make([]byte, inspect.MaxFirstFlight)
	return &b
}}

// inspectFirstFlight reads the tunnel's first bytes (those pipelined behind
// the CONNECT, which br holds, then from the socket) until package inspect
// gives a verdict, bounded by inspect.MaxFirstFlight and c.timeout. It runs
// on the handler's goroutine and writes nothing to the target before the
// verdict. On a pass, or on a refusal in report mode (logged and counted
// as would_deny), it forwards every byte it read, verbatim, and returns
// true: the caller hands the tunnel to the relay. Otherwise it closes the
// tunnel (result not_websocket) and returns false.
func (t *tunnel) inspectFirstFlight(br bufferedReader, c check) bool {
	bp := firstFlights.Get().(*[]byte)
	defer firstFlights.Put(bp)
	n, v, err := readFirstFlight(t.client, br, *bp, t.log.target, c)
	t.log.check = v.Result.String()
	if h := v.Hello; h != nil && t.s.log.Enabled(t.s.baseCtx, slog.LevelDebug) {
		t.s.log.Debug("client hello", keyClient, t.log.client.String(), keyTarget, t.log.target.String(),
			keyCheck, v.Result.String(), "sni", h.SNI, "alpn", strings.Join(h.ALPN, ","), "ech", h.ECH)
	}
	if err != nil && t.s.baseCtx.Err() != nil {
		// Shutdown closed the conns mid first flight (see hijack).
		t.close(relay.Result{Reason: relay.EndCanceled, Err: context.Cause(t.s.baseCtx)})
		return false
	}
	if n == 0 && err != nil && errors.Is(err, io.EOF) {
		// The client closed without sending a byte: nothing to judge,
		// nothing to forward (a speculative preconnect looks like this).
		t.close(relay.Result{Reason: relay.EndClientClosed})
		return false
	}
	if !v.Pass() {
		reason := refusal(n, v, err, c.timeout)
		if !v.Done() {
			t.log.check, _, _ = strings.Cut(reason, ":")
		}
		if !c.report {
			t.log.result, t.log.reason = resultNotWebSocket, reason
			t.close(relay.Result{Reason: endNotWebSocket})
			return false
		}
		t.wouldDeny(reportedCheck(reason))
	}
	m, werr := t.target.Write((*bp)[:n])
	t.up = int64(m)
	if werr != nil {
		t.close(relay.Result{Reason: relay.EndError, Err: fmt.Errorf("forward %d first bytes: %w", n, werr)})
		return false
	}
	return true
}

// refusal is the log reason of a tunnel the check did not pass.
func refusal(n int, v inspect.Verdict, err error, timeout time.Duration) string {
	switch {
	case v.Result == inspect.Refuse:
		return string(v.Reason) + ": " + v.Text
	case isTimeout(err):
		return fmt.Sprintf("%s: no WebSocket handshake or ClientHello within --header-timeout %v (%d bytes)", reasonTimeout, timeout, n)
	default:
		return fmt.Sprintf("%s: first flight ended after %d bytes without a verdict: %v", reasonIncomplete, n, err)
	}
}

// readFirstFlight fills buf (inspect.MaxFirstFlight bytes) with what br
// holds, then from client, until inspect.Check on buf[:n] is done. It
// reads at least up to the verdict's Need each time, so a head split
// into many reads is not parsed once per byte. The read deadline it sets
// (c.timeout from now) is cleared before it returns. err is why it
// stopped without a verdict.
func readFirstFlight(client net.Conn, br bufferedReader, buf []byte, target acl.Target, c check) (n int, v inspect.Verdict, err error) {
	if k := br.Buffered(); k > 0 {
		b, _ := br.Peek(k)
		n = copy(buf, b) // k <= the hijack buffer's 4 KiB < len(buf)
		br.Discard(n)
	}
	v = inspect.Check(buf[:n], target, c.opts)
	if v.Done() {
		return n, v, nil
	}
	client.SetReadDeadline(time.Now().Add(c.timeout))
	defer client.SetReadDeadline(time.Time{})
	for !v.Done() {
		for n < v.Need { // Need <= len(buf): Check refuses beyond it
			m, err := client.Read(buf[n:])
			n += m
			if err != nil {
				return n, v, err
			}
		}
		v = inspect.Check(buf[:n], target, c.opts)
	}
	return n, v, nil
}

// checkRequest applies the WebSocket-only check to an absolute-form
// request itself (its method, Upgrade, Connection, Sec-WebSocket-* and
// Host, which net/http took from the URL): there are no tunnel bytes to
// look at. --sni-check alone has nothing to check here. It returns why
// the check failed ("" if it passed or does not apply) and whether to
// refuse (false in report mode).
func (q *request) checkRequest() (reason string, refuse bool) {
	c, ok := q.check()
	if !ok || c.opts.Mode != inspect.WebSocketOnly {
		return "", false
	}
	v := inspect.CheckRequest(q.r, q.target)
	q.checked = v.Result.String()
	if v.Pass() {
		return "", false
	}
	return string(v.Reason) + ": " + v.Text, !c.report
}

// reportedCheck is the log reason of a check failed in report mode.
func reportedCheck(reason string) string {
	return reason + "; reported, not enforced: --inspect-mode report"
}
