package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy/relay"
)

// dialedKey carries the connection serveForward dialed to goproxy's
// transport, which takes it instead of dialing.
type dialedKey struct{}

// dialedConn is a connection handed to the transport at most once, and
// what became of the request (written by goproxy's response hook, which
// runs on the handler's goroutine).
type dialedConn struct {
	once   sync.Once
	conn   net.Conn
	body   *stallBody // the request body, if any
	failed error      // the proxy, not the target, answered
}

// take returns the connection the first time and nil after.
func (d *dialedConn) take() net.Conn {
	var c net.Conn
	d.once.Do(func() { c, d.conn = d.conn, nil })
	return c
}

var errNoConn = errors.New("no admitted connection for this request")

// newGoproxy builds the plain-HTTP forwarder. goproxy serves only
// non-upgrade absolute-form requests here: CONNECT and WebSocket upgrades
// have their own paths. The request is admitted and its target dialed by
// serveForward, exactly as for tunnels; the transport only takes that
// connection (it never dials, so it never follows the environment's
// HTTP_PROXY and never reaches an unchecked address) and keeps no idle
// connections, because one dialed for one user must not serve another.
func (s *Server) newGoproxy(cfg Config) *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	gp.KeepAcceptEncoding = true
	gp.ConnectDial = nil
	gp.Tr = &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			if d, ok := ctx.Value(dialedKey{}).(*dialedConn); ok {
				if c := d.take(); c != nil {
					return c, nil
				}
			}
			return nil, fmt.Errorf("dial %s: %w", addr, errNoConn)
		},
		DisableKeepAlives:      true,
		DisableCompression:     true, // pass Accept-Encoding and bodies as they are
		MaxResponseHeaderBytes: int64(cfg.MaxHeaderBytes),
		ResponseHeaderTimeout:  cfg.ResponseHeaderTimeout,
	}
	gp.OnResponse().DoFunc(func(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
		dc, _ := ctx.Req.Context().Value(dialedKey{}).(*dialedConn)
		fail := func(status int, err error) *http.Response {
			if dc != nil {
				dc.failed = err
			}
			return errorResponse(ctx.Req, status, err)
		}
		switch {
		case resp == nil && dc != nil && dc.body.hasStalled():
			return fail(http.StatusRequestTimeout, fmt.Errorf("%w: %w", errBodyTimeout, ctx.Error))
		case resp == nil && ctx.Error != nil:
			return fail(statusFor(ctx.Error), ctx.Error)
		case resp != nil && resp.StatusCode == http.StatusSwitchingProtocols:
			// Only the upgrade path may switch protocols; goproxy would
			// try to hijack a writer that cannot be hijacked.
			resp.Body.Close()
			return fail(http.StatusBadGateway, fmt.Errorf("%w: 101 to a request that asked for no upgrade", errUpstream))
		case resp != nil:
			removeHopHeaders(resp.Header)
		}
		return resp
	})
	return gp
}

// errorResponse is a short text response for the forward path.
func errorResponse(req *http.Request, status int, err error) *http.Response {
	body := publicText(status, err)
	return &http.Response{
		StatusCode:    status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Connection": {"close"}},
		Body:          io.NopCloser(bytes.NewReader([]byte(body))),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// serveForward forwards an ordinary absolute-form request (not an
// upgrade), admitted and dialed like a tunnel (see tunnel); goproxy's
// transport then takes the dialed conn. The pending place is given back
// once the target is dialed, as a tunnel gives it back after its 200.
func (s *Server) serveForward(w http.ResponseWriter, q *request) {
	r := q.r
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
	default:
		s.refuse(w, q, fmt.Errorf("%w: %s", errMethod, r.Method))
		return
	}
	if r.URL.Scheme == "ws" || r.URL.Scheme == "wss" {
		s.refuse(w, q, fmt.Errorf("%w: %s:// without Upgrade: websocket", errBadRequest, r.URL.Scheme))
		return
	}
	t, ok := s.admit(w, q)
	if !ok {
		return
	}
	target, err := acl.ParseURLTarget(r.URL)
	if !t.reach(w, target, err) {
		return
	}
	// Under --websocket-only (or a websocket_only rule) plain HTTP is not
	// a WebSocket: refused, or reported.
	would, refuse := q.checkRequest()
	if refuse {
		t.refuse(w, fmt.Errorf("%w: %s", errNotWebSocket, would))
		return
	}
	t.leavePending()
	dc := &dialedConn{conn: t.target}
	t.target = nil // the transport's now, unless it never takes it
	if r.Body != nil && r.Body != http.NoBody {
		dc.body = &stallBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: q.st.cfg.BodyTimeout}
		r.Body = dc.body
		defer dc.body.clear()
	}

	removeHopHeaders(r.Header)
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = []string{""} // keep Go's transport from adding its own
	}
	sr := &statusRecorder{ResponseWriter: w}
	s.gp.ServeHTTP(sr, r.WithContext(context.WithValue(r.Context(), dialedKey{}, dc)))
	t.target = dc.take() // still here if the transport never took it
	if dc.failed != nil {
		s.metrics.TunnelResult(resultFor(sr.status))
		s.logRefused(q, sr.status, dc.failed)
		t.close(relay.Result{})
		return
	}
	t.status, t.log = sr.status, q.endLog()
	if would != "" {
		t.wouldDeny(reportedCheck(would))
	}
	s.metrics.TunnelResult(t.log.result)
	t.close(relay.Result{Down: sr.n, Reason: endResponseSent})
}

// stallBody is a forwarded request's body that must keep moving: before
// every Read the client connection's read deadline is set timeout ahead,
// so a body that sends nothing for that long fails with a timeout, which
// the forward path answers with 408 and a close. The deadline is cleared
// at the body's end, before the wait for the target's response (which
// --response-header-timeout bounds), so net/http's background read of the
// idle connection is not cut by it.
type stallBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	stalled atomic.Bool
}

func (b *stallBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil:
	case isTimeout(err):
		b.stalled.Store(true)
	default: // io.EOF, or the client went away
		b.clear()
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.clear()
	return b.ReadCloser.Close()
}

// clear removes the read deadline unless the body stalled (then the
// connection is closed anyway).
func (b *stallBody) clear() {
	if !b.stalled.Load() {
		b.rc.SetReadDeadline(time.Time{})
	}
}

// hasStalled reports whether the body hit its timeout; nil: no body.
func (b *stallBody) hasStalled() bool { return b != nil && b.stalled.Load() }

// statusRecorder is the http.ResponseWriter goproxy writes to: it records
// the status and the body size for the end line.
type statusRecorder struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		// Pass the target's headers as they are: no sniffed Content-Type.
		if _, ok := w.Header()["Content-Type"]; !ok {
			w.Header()["Content-Type"] = nil
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// Flush lets streamed responses through.
func (w *statusRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
