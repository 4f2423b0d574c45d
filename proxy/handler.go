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
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/auth"
	"github.com/wsegress/wsegress/proxy/limit"
	"github.com/wsegress/wsegress/proxy/listen"
)

// connInfo is per client connection state, kept in the request context.
type connInfo struct {
	authFailures atomic.Int32 // 407s sent on this connection
	via          string       // the balancer, when a PROXY header gave the client
	conn         net.Conn     // the client connection, for keep-alive (armKeepAlive)
}

type connInfoKey struct{}

func withConnInfo(ctx context.Context, c net.Conn) context.Context {
	ci := &connInfo{conn: c}
	if via, ok := listen.Via(c); ok {
		ci.via = via.String()
	}
	return context.WithValue(ctx, connInfoKey{}, ci)
}

func connInfoFrom(ctx context.Context) *connInfo {
	if ci, ok := ctx.Value(connInfoKey{}).(*connInfo); ok {
		return ci
	}
	return &connInfo{}
}

// request is one proxy request on its way through admission: who asks,
// for what, and what was decided, for the canonical log line.
type request struct {
	r      *http.Request
	start  time.Time
	client netip.AddrPort
	via    string // the balancer that sent client in a PROXY header
	user   string
	authBy string // authByCert, authByBasic; "" until authenticated
	groups []string
	target acl.Target
	dialed string
	rule   string
	reason string
	// report: the ACL would deny the target but only reports it (a report
	// rule or --acl-mode report); wsOnly: the allow rule has websocket_only.
	report, wsOnly bool
	checked        string // the absolute-form WebSocket check's result, if it ran
	st             *state // the configuration snapshot this request runs under
}

func (q *request) subject() acl.Subject { return acl.Subject{User: q.user, Groups: q.groups} }

// ServeHTTP routes a proxy request: CONNECT to the tunnel path, absolute-
// form WebSocket upgrades to the upgrade path, other absolute-form requests
// to goproxy. Origin-form requests are not for a forward proxy, except
// GET and HEAD /proxy.pac when a PAC file is configured (no auth: a
// browser fetches its PAC before it knows the proxy).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := &request{r: r, start: time.Now(), st: s.state.Load()}
	q.client, _ = netip.ParseAddrPort(r.RemoteAddr)
	q.via = connInfoFrom(r.Context()).via
	switch {
	case r.Method == http.MethodConnect:
		s.metrics.Request(requestConnect)
		s.serveConnect(w, q)
	case !r.URL.IsAbs():
		if s.servePAC(w, r, q.st) {
			return
		}
		s.metrics.Request(requestHTTP)
		s.refuse(w, q, fmt.Errorf("%w: %s %s; send CONNECT or an absolute-form URL", errNotProxy, r.Method, acl.Redact(r.URL.Path)))
	case isUpgrade(r.Header):
		s.metrics.Request(requestUpgrade)
		s.serveUpgrade(w, q)
	default:
		s.metrics.Request(requestHTTP)
		s.serveForward(w, q)
	}
}

// authenticate finds who sends the request: the user of a verified client
// certificate first (Proxy-Authorization is then not checked), else Basic
// credentials when --htpasswd is set, else 407 — or no one, when there is
// no authentication on this listener.
func (s *Server) authenticate(q *request) error {
	if user, ok := s.certUser(q); ok {
		q.user, q.authBy, q.groups = user, authByCert, q.st.groupsOf(user)
		return nil
	}
	a := q.st.auth
	if a == nil {
		if s.certsOnly(q) {
			// The handshake required a certificate, and it names no user.
			s.metrics.AuthFailed(authInvalid)
			return fmt.Errorf("%w: the client certificate names no user", errAuthRequired)
		}
		return nil
	}
	// Several Proxy-Authorization lines are combined as RFC 9110 5.3
	// combines repeated fields, with ", ". A comma is not base64, so the
	// combination never parses: two credentials are refused (and counted
	// as a failure) rather than guessed between.
	hdr := strings.Join(q.r.Header.Values("Proxy-Authorization"), ", ")
	res := a.Check(q.client.Addr().Unmap(), hdr)
	q.user = res.User
	switch res.Status {
	case auth.StatusOK:
		q.authBy, q.groups = authByBasic, a.Groups(res.User)
		return nil
	case auth.StatusThrottled:
		s.metrics.AuthFailed(authThrottled)
		return &throttledError{retryAfter: res.RetryAfter}
	case auth.StatusBusy:
		// auth says 1s (RetryAfter), the 503's usual Retry-After.
		s.metrics.AuthFailed(authBusy)
		return fmt.Errorf("%w: %w", errAuthBusy, auth.ErrBusy)
	case auth.StatusMissing:
		s.metrics.AuthFailed(authMissing)
		return fmt.Errorf("%w: no credentials", errAuthRequired)
	default:
		s.metrics.AuthFailed(authInvalid)
		return fmt.Errorf("%w: invalid credentials", errAuthRequired)
	}
}

// acquire takes the request's tunnel slot, waiting up to QueueTimeout in
// arrival order; the client hanging up while queued gives its place back.
func (s *Server) acquire(q *request) (*limit.Slot, error) {
	slot, err := s.limiter.Acquire(q.r.Context(), limit.Key{
		User: q.user, Groups: q.groups, ClientIP: q.client.Addr(), Host: q.target.Host,
	}, q.st.cfg.QueueTimeout)
	if err != nil {
		var le *limit.Error
		if errors.As(err, &le) {
			s.metrics.LimitRefused(le.Kind)
			if le.Waited > 0 {
				s.metrics.ObserveQueueWait(le.Waited)
			}
		}
		return nil, err
	}
	if w := slot.Waited(); w > 0 {
		s.metrics.ObserveQueueWait(w)
	}
	return slot, nil
}

// dial connects to the request's target under the dial timeout.
func (s *Server) dial(q *request) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(q.r.Context(), q.st.cfg.DialTimeout)
	defer cancel()
	start := time.Now()
	c, res, err := q.st.dialer.dial(ctx, q.st.policy, q.target, q.subject())
	dec := res.decision
	q.rule, q.reason, q.dialed = dec.Rule, dec.Reason, res.addr
	q.report, q.wsOnly = dec.Report, dec.WebSocketOnly
	if errors.Is(err, errDenied) {
		s.metrics.ACLDenied(q.rule)
		return nil, err
	}
	if q.report {
		s.metrics.ACLWouldDeny(q.rule)
	}
	s.metrics.ObserveDial(time.Since(start))
	return c, err
}

// refuse answers a request the proxy will not serve, with a short text
// body and no internal details, and logs the canonical line.
func (s *Server) refuse(w http.ResponseWriter, q *request, err error) {
	status := statusFor(err)
	s.errorHeaders(w.Header(), q, status, err)
	w.WriteHeader(status)
	fmt.Fprint(w, publicText(status, err))
	s.metrics.TunnelResult(resultOf(status, err))
	s.logRefused(q, status, err)
}

// refuseRaw is refuse for a connection already hijacked from net/http.
func (s *Server) refuseRaw(c net.Conn, q *request, err error) {
	status := statusFor(err)
	body := publicText(status, err)
	resp := &http.Response{
		StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
		ContentLength: int64(len(body)), Body: io.NopCloser(strings.NewReader(body)), Close: true,
	}
	s.errorHeaders(resp.Header, q, status, err)
	resp.Write(c)
	s.metrics.TunnelResult(resultOf(status, err))
	s.logRefused(q, status, err)
}

// errorHeaders sets the headers of an error response. Every error closes
// the connection except 407, which keeps it for a retry with credentials
// (Chromium retries on the same connection), a few times only.
func (s *Server) errorHeaders(h http.Header, q *request, status int, err error) {
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	switch status {
	case http.StatusProxyAuthRequired:
		h.Set("Proxy-Authenticate", `Basic realm="`+q.st.cfg.Realm+`"`)
		if connInfoFrom(q.r.Context()).authFailures.Add(1) < int32(q.st.cfg.MaxAuthRetries) {
			return
		}
	case http.StatusTooManyRequests:
		var te *throttledError
		errors.As(err, &te)
		h.Set("Retry-After", retryAfter(te.wait()))
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	h.Set("Connection", "close")
}

// logRefused writes the canonical line of a request that got no tunnel.
func (s *Server) logRefused(q *request, status int, err error) {
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelWarn
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs, slog.String(keyClient, q.client.String()))
	attrs = appendClientAttrs(attrs, q.client.Addr(), q.via)
	attrs = append(attrs,
		slog.String(keyUser, q.user),
		slog.String(keyAuth, q.authString()),
		slog.String(keyMethod, q.r.Method),
		slog.String(keyTarget, q.targetString()),
		slog.Int(keyStatus, status),
		slog.String(keyResult, resultOf(status, err).String()),
		slog.String(keyRule, q.rule),
		slog.String(keyReason, q.reason),
		slog.String(keyErr, acl.Redact(err.Error())),
		slog.Duration(keyDuration, time.Since(q.start)),
	)
	s.log.LogAttrs(q.r.Context(), level, "request refused", attrs...)
}

// appendClientAttrs adds, after the client key of a canonical line, via
// when a PROXY header gave the client, and client_key when per-IP limits
// and the throttle count the client under a wider key (an IPv6 /64).
func appendClientAttrs(attrs []slog.Attr, client netip.Addr, via string) []slog.Attr {
	if via != "" {
		attrs = append(attrs, slog.String(keyVia, via))
	}
	if a, ok := clientKeyAttr(client); ok {
		attrs = append(attrs, a)
	}
	return attrs
}

// authString is how the request's user was authenticated, for logs.
func (q *request) authString() string {
	if q.authBy == "" {
		return authByNone
	}
	return q.authBy
}

// targetString is the target for logs: the parsed one, or else the raw
// host:port only — never a path or query, which often carry tokens in
// WebSocket URLs, and never userinfo.
func (q *request) targetString() string {
	if q.target.Host != "" {
		return q.target.String()
	}
	if q.r.Method == http.MethodConnect {
		return acl.Redact(q.r.RequestURI)
	}
	if q.r.URL != nil {
		return acl.Redact(q.r.URL.Host)
	}
	return ""
}

// retryAfter is a Retry-After value: d in whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	sec := int(d.Round(time.Second) / time.Second)
	if sec < 1 {
		sec = 1
	}
	return strconv.Itoa(sec)
}

// isUpgrade reports whether h asks for a protocol upgrade (RFC 9110 7.8).
func isUpgrade(h http.Header) bool {
	if h.Get("Upgrade") == "" {
		return false
	}
	for _, v := range h.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}
