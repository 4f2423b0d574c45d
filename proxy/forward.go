package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"

	"github.com/elazarl/goproxy"

	"github.com/wsegress/wsegress/acl"
)

// requestKey carries the admitted request to the transport's dial, so the
// ACL decides with the same user and the same resolved addresses.
type requestKey struct{}

// newGoproxy builds the plain-HTTP forwarder. goproxy serves only
// non-upgrade absolute-form requests here: CONNECT and WebSocket upgrades
// have their own paths. Its transport dials through our dialer (never the
// environment's HTTP_PROXY) and keeps no idle connections, because a
// pooled connection dialed for one user must not serve another user whose
// rules differ.
func (s *Server) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	gp.KeepAcceptEncoding = true
	gp.ConnectDial = nil
	gp.Tr = &http.Transport{
		Proxy:                  nil,
		DialContext:            s.dialForward,
		DisableKeepAlives:      true,
		ResponseHeaderTimeout:  0,
		MaxResponseHeaderBytes: int64(s.cfg.MaxHeaderBytes),
	}
	gp.OnResponse().DoFunc(func(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
		if resp != nil || ctx.Error == nil {
			return resp
		}
		q, _ := ctx.Req.Context().Value(requestKey{}).(*request)
		status := statusFor(ctx.Error)
		if q != nil {
			q.failed = ctx.Error
		}
		body := publicText(status, ctx.Error)
		return &http.Response{
			StatusCode:    status,
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Connection": {"close"}},
			Body:          io.NopCloser(bytes.NewReader([]byte(body))),
			ContentLength: int64(len(body)),
			Request:       ctx.Req,
		}
	})
	return gp
}

// serveForward forwards an ordinary absolute-form request (not an upgrade).
func (s *Server) serveForward(w http.ResponseWriter, q *request) {
	r := q.r
	if err := s.authenticate(q); err != nil {
		s.refuse(w, q, err)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
	default:
		s.refuse(w, q, fmt.Errorf("%w: %s", ErrMethod, r.Method))
		return
	}
	if r.URL.Scheme == "ws" || r.URL.Scheme == "wss" {
		s.refuse(w, q, fmt.Errorf("%w: %s:// without Upgrade: websocket", ErrBadRequest, r.URL.Scheme))
		return
	}
	t, err := acl.ParseURLTarget(r.URL)
	if err != nil {
		s.refuse(w, q, err)
		return
	}
	q.target = t
	slot, err := s.acquire(q)
	if err != nil {
		s.refuse(w, q, err)
		return
	}
	defer slot.Release()
	r.Header.Del("Proxy-Authorization")
	r.Header.Del("Proxy-Connection")
	cw := &countingWriter{ResponseWriter: w}
	s.gp.ServeHTTP(cw, r.WithContext(context.WithValue(r.Context(), requestKey{}, q)))
	if q.failed != nil {
		s.metrics.TunnelResult(resultFor(cw.status))
		s.logRefused(q, cw.status, q.failed)
		return
	}
	s.metrics.TunnelResult(resultOK)
	s.logEnd(q.endLog(), cw.status, RelayResult{Down: cw.n, Reason: "response_sent"})
}

// dialForward is the goproxy transport's dial. It always dials the
// admitted target of the request in ctx (the transport keeps no idle
// connections, so every dial belongs to exactly one request), through the
// same resolve-check-dial path as tunnels.
func (s *Server) dialForward(ctx context.Context, _, addr string) (net.Conn, error) {
	q, ok := ctx.Value(requestKey{}).(*request)
	if !ok {
		return nil, fmt.Errorf("dial %s: %w: no admitted request", addr, ErrDenied)
	}
	qc := *q
	qc.r = q.r.WithContext(ctx)
	c, err := s.dial(&qc)
	q.rule, q.reason, q.dialed = qc.rule, qc.reason, qc.dialed
	return c, err
}

// countingWriter records the status and body size goproxy wrote.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// Flush lets streamed responses through.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
