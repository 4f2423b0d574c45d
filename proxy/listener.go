package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/wsegress/wsegress/proxy/listen"
)

// metricsMaxConns caps the metrics listener's connections: a scraper, a
// few probes and an operator's curl need a handful, and an idle or slow
// client must not take more of the proxy's fd budget than this.
const metricsMaxConns = 64

// metricsMaxConnsPerIP keeps one client (a stuck scraper, a looping
// script) from taking every metrics connection: probes from another
// address still get in. Many silent clients can still fill the cap for up
// to --header-timeout, so the metrics port belongs on a network clients
// cannot reach.
const metricsMaxConnsPerIP = metricsMaxConns / 4

// metricsWriteTimeout bounds writing one metrics response.
const metricsWriteTimeout = 30 * time.Second

// newMetricsServer is the http.Server of the metrics listener: every
// phase of a connection has a deadline, so a silent or slow client holds
// its fd for headerTimeout at most (metricsWriteTimeout while a response
// is written).
func newMetricsServer(h http.Handler, headerTimeout time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       headerTimeout, // GETs only: no body to wait for
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       headerTimeout,
		MaxHeaderBytes:    8 << 10,
	}
}

// clientConns is the number of client connections held by the listeners
// Serve and ServeTLS wrapped (all of them: they share s.caps), for
// wsegress_client_conns.
func (s *Server) clientConns() int { return s.caps.Usage().Conns }

// connRefused is the client listeners' OnRefuse: it counts the refusal
// and logs it, rate-limited. It runs on the accepting goroutine.
func (s *Server) connRefused(r listen.Refusal) {
	switch r.Kind {
	case listen.KindProxyProtocol:
		s.metrics.Request(requestProxyRefused)
	default:
		s.metrics.ConnRefused(r.Kind)
	}
	s.refusal.add(r)
}

// refusalLogEvery is the quiet period of refusalLog.
const refusalLogEvery = 10 * time.Second

// refusalLog logs connections refused at accept without letting a flood
// of them flood the log (or slow the accept loop): the first refusal of a
// kind is logged at once, the ones that follow within refusalLogEvery are
// only counted, and one line at the end of the period reports how many
// there were, with the last one as a sample. Exact counts are in the
// metrics.
type refusalLog struct {
	log   *slog.Logger
	every time.Duration // the quiet period; 0: refusalLogEvery

	mu    sync.Mutex // guards kinds
	kinds [3]refusalWindow
}

// refusalWindow is one kind's quiet period.
type refusalWindow struct {
	until      time.Time // refusals before this are only counted
	suppressed int
	last       listen.Refusal
	flushing   bool // a timer will log the count at until
}

func (rl *refusalLog) add(r listen.Refusal) {
	k := int(r.Kind)
	if k < 0 || k >= len(rl.kinds) {
		return
	}
	now := time.Now()
	rl.mu.Lock()
	w := &rl.kinds[k]
	if !now.Before(w.until) {
		w.until = now.Add(rl.period())
		rl.mu.Unlock()
		rl.write(r, 1)
		return
	}
	w.suppressed++
	w.last = r
	if !w.flushing {
		w.flushing = true
		time.AfterFunc(w.until.Sub(now), func() { rl.flush(k) })
	}
	rl.mu.Unlock()
}

func (rl *refusalLog) period() time.Duration {
	if rl.every > 0 {
		return rl.every
	}
	return refusalLogEvery
}

// flush logs the refusals counted during a quiet period.
func (rl *refusalLog) flush(k int) {
	rl.mu.Lock()
	w := &rl.kinds[k]
	n, last := w.suppressed, w.last
	w.suppressed, w.flushing, w.last = 0, false, listen.Refusal{}
	rl.mu.Unlock()
	if n > 0 {
		rl.write(last, n)
	}
}

func (rl *refusalLog) write(r listen.Refusal, n int) {
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs, slog.String(keyKind, r.Kind.String()), slog.Int(keyCount, n))
	if r.Remote != nil {
		attrs = append(attrs, slog.String(keyClient, r.Remote.String()))
	}
	if r.Via != nil {
		attrs = append(attrs, slog.String(keyVia, r.Via.String()))
	}
	if r.Key.IsValid() && r.Key.Bits() != r.Key.Addr().BitLen() {
		attrs = append(attrs, slog.String(keyClientKey, r.Key.String()))
	}
	if r.Err != nil {
		attrs = append(attrs, slog.String(keyErr, r.Err.Error()))
	}
	msg := "connection refused"
	if n > 1 {
		// client, via and err are those of the last one.
		msg = "connections refused"
		attrs = append(attrs, slog.Duration(keyPeriod, rl.period()))
	}
	rl.log.LogAttrs(context.Background(), slog.LevelInfo, msg, attrs...)
}

// clientKeyAttr is the client_key attribute of a canonical line: the /64
// an IPv6 client is counted under by per-IP limits and the throttle. An
// IPv4 client is counted under its address, so it gets none.
func clientKeyAttr(client netip.Addr) (slog.Attr, bool) {
	key := listen.ClientKey(client)
	if !key.IsValid() || key.Bits() == key.Addr().BitLen() {
		return slog.Attr{}, false
	}
	return slog.String(keyClientKey, key.String()), true
}
