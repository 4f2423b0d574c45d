package proxy

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsegress/wsegress/proxy/limit"
	"github.com/wsegress/wsegress/proxy/listen"
	"github.com/wsegress/wsegress/proxy/relay"
)

// The bounded label sets are typed constants (result, authFailure,
// requestKind, limit.Kind): a metric is indexed by its constant, never
// looked up by string. The metric names and label values are promises to
// dashboards: add, never rename. Each set is pre-initialised to 0 so every
// series exists from the first scrape.

// authFailure is why an authentication failed: the reason label of
// wsegress_auth_failures_total.
type authFailure uint8

const (
	authMissing authFailure = iota
	authInvalid
	authThrottled
	authBusy // not checked: --auth-max-concurrent hashes were running
	numAuthFailures
)

var authFailureNames = [numAuthFailures]string{"missing", "invalid", "throttled", "busy"}

func (a authFailure) String() string { return authFailureNames[a] }

// requestKind is the kind label of wsegress_requests_total.
type requestKind uint8

const (
	requestConnect requestKind = iota
	requestHTTP
	requestUpgrade
	// requestProxyRefused: a connection from a --proxy-protocol-from
	// source closed for want of a valid PROXY header (never a request).
	requestProxyRefused
	numRequestKinds
)

var requestKindNames = [numRequestKinds]string{"connect", "http", "upgrade", "proxy_protocol_refused"}

func (k requestKind) String() string { return requestKindNames[k] }

// defaultACLRule labels ACL denials that matched no named rule.
const defaultACLRule = "default"

// metrics holds the proxy's Prometheus metrics on a registry of its own
// (never the global default one), so a Server owns them and tests can run
// servers side by side. All methods are safe for concurrent use, and a nil
// *metrics records nothing, so the server can run without metrics.
//
// Label values are typed constants or operator-configured rule names, so
// the label sets stay bounded.
type metrics struct {
	reg *prometheus.Registry

	tunnelsOpen    prometheus.Gauge
	tunnelResults  [numResults]prometheus.Counter
	bytesUp        prometheus.Counter
	bytesDown      prometheus.Counter
	tunnelDuration prometheus.Histogram
	dialDuration   prometheus.Histogram
	queueWait      prometheus.Histogram
	authFailures   [numAuthFailures]prometheus.Counter
	aclDenials     *prometheus.CounterVec
	aclWouldDeny   *prometheus.CounterVec
	limitRefusals  [limit.NumKinds]prometheus.Counter
	connRefusals   [2]prometheus.Counter // listen.KindConns, listen.KindConnsPerIP
	requests       [numRequestKinds]prometheus.Counter
	tunnelEnds     *prometheus.CounterVec
	endCounters    map[relay.EndReason]prometheus.Counter // the known reasons; read-only after newMetrics
	handovers      [2]prometheus.Counter                  // result ok, failed

	pool  atomic.Pointer[func() []limit.Usage] // set by SetPoolSource
	conns atomic.Pointer[func() int]           // set by SetConnSource
}

// newMetrics creates the metrics and registers them, with the Go runtime
// and process collectors, on a new registry.
func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.tunnelsOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsegress_tunnels_open",
		Help: "Tunnels currently established (after the 200, until both sockets are closed).",
	})
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_tunnels_total",
		Help: "Tunnel requests by outcome: ok, denied, auth_failed, limited, dial_error, timeout, bad_request, error, not_websocket, would_deny.",
	}, []string{"result"})
	for r := range numResults {
		m.tunnelResults[r] = results.WithLabelValues(r.String())
	}
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_bytes_total",
		Help: "Bytes relayed through tunnels: up is client to target, down is target to client.",
	}, []string{"direction"})
	m.bytesUp, m.bytesDown = bytes.WithLabelValues("up"), bytes.WithLabelValues("down")
	m.tunnelDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "wsegress_tunnel_duration_seconds",
		Help: "Lifetime of closed tunnels.",
		// WebSockets live from a moment to a day; a second-resolution
		// bucket set would lump every long tunnel into +Inf.
		Buckets: []float64{0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600},
	})
	m.dialDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wsegress_dial_duration_seconds",
		Help:    "Time to resolve and connect to a target, successful or not.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	})
	m.queueWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wsegress_queue_wait_seconds",
		Help:    "Time requests spent queued for a tunnel slot (only those that queued), served or not.",
		Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	})
	auth := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_auth_failures_total",
		Help: "Failed proxy authentications: missing, invalid, throttled, busy.",
	}, []string{"reason"})
	for a := range numAuthFailures {
		m.authFailures[a] = auth.WithLabelValues(a.String())
	}
	m.aclDenials = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_acl_denials_total",
		Help: "Requests the ACL refused, by the name of the deciding rule (default: no rule matched).",
	}, []string{"rule"})
	m.aclDenials.WithLabelValues(defaultACLRule)
	m.aclWouldDeny = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_acl_would_deny_total",
		Help: "Requests the ACL would have refused but only reported (report rules, --acl-mode report), by the name of the rule that would deny (default: the default). They went on and are not in wsegress_acl_denials_total.",
	}, []string{"rule"})
	m.aclWouldDeny.WithLabelValues(defaultACLRule)
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_limit_refusals_total",
		Help: "Requests refused with 503 because a tunnel limit was full, by limit kind; conns and conns_per_ip: connections closed at accept by --max-conns and --max-conns-per-ip.",
	}, []string{"kind"})
	for k := range limit.NumKinds {
		m.limitRefusals[k] = refusals.WithLabelValues(k.String())
	}
	for i, k := range []listen.Kind{listen.KindConns, listen.KindConnsPerIP} {
		m.connRefusals[i] = refusals.WithLabelValues(k.String())
	}
	clientConns := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wsegress_client_conns",
		Help: "Client connections open, from accept to close (tunnels' client sides included), as --max-conns counts them.",
	}, func() float64 {
		if f := m.conns.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_requests_total",
		Help: "Proxy requests received, by kind: connect, http (plain forwarding), upgrade (WebSocket over plain HTTP); proxy_protocol_refused: connections from a trusted balancer closed without a valid PROXY header.",
	}, []string{"kind"})
	for k := range numRequestKinds {
		m.requests[k] = requests.WithLabelValues(k.String())
	}

	m.tunnelEnds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_tunnel_ends_total",
		Help: "Established tunnels closed, by end reason (the end key of the log line): client_closed, target_closed, client_reset, target_reset, idle_timeout, write_timeout, lifetime, canceled (drain timeout), error, panic, target_refused_upgrade, response_sent, not_websocket.",
	}, []string{"reason"})
	m.endCounters = make(map[relay.EndReason]prometheus.Counter, len(endReasons))
	for _, r := range endReasons {
		m.endCounters[r] = m.tunnelEnds.WithLabelValues(string(r))
	}
	handovers := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsegress_handover_total",
		Help: "SIGUSR2 handovers of the listening sockets to a new process: ok is counted by the new process once it took over, failed by the old one, which keeps serving.",
	}, []string{"result"})
	m.handovers[0], m.handovers[1] = handovers.WithLabelValues("ok"), handovers.WithLabelValues("failed")

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.tunnelsOpen, results, bytes, m.tunnelDuration, m.dialDuration,
		m.queueWait, auth, m.aclDenials, m.aclWouldDeny, refusals, requests, clientConns, m.tunnelEnds, handovers,
		newPoolCollector(m),
	)
	return m
}

// Registry returns the registry the metrics live on, for serving or for
// registering more collectors.
func (m *metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// TunnelResult counts one request's outcome in wsegress_tunnels_total:
// one call per request, resultOK once the 200 is sent.
func (m *metrics) TunnelResult(r result) {
	if m == nil {
		return
	}
	m.tunnelResults[r].Inc()
}

// endReasons are the end reasons wsegress_tunnel_ends_total starts at 0.
var endReasons = []relay.EndReason{
	relay.EndClientClosed, relay.EndTargetClosed, relay.EndClientReset, relay.EndTargetReset,
	relay.EndIdleTimeout, relay.EndWriteTimeout, endLifetime, relay.EndCanceled, relay.EndError, relay.EndPanic,
	endTargetRefused, endResponseSent, endNotWebSocket,
}

// TunnelEnded counts an established tunnel's end by its reason. The
// reasons are constants of the relay and this package, so the label set
// stays bounded even for one not listed in endReasons.
func (m *metrics) TunnelEnded(r relay.EndReason) {
	if m == nil || r == "" {
		return
	}
	if c, ok := m.endCounters[r]; ok {
		c.Inc()
		return
	}
	m.tunnelEnds.WithLabelValues(string(r)).Inc()
}

// Handover counts a handover of the listening sockets: ok by the process
// that took over, failed by the one whose attempt failed.
func (m *metrics) Handover(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.handovers[0].Inc()
	} else {
		m.handovers[1].Inc()
	}
}

// TunnelOpened marks a tunnel established; pair it with TunnelClosed.
func (m *metrics) TunnelOpened() {
	if m == nil {
		return
	}
	m.tunnelsOpen.Inc()
}

// TunnelClosed marks an established tunnel gone after it lived for d.
func (m *metrics) TunnelClosed(d time.Duration) {
	if m == nil {
		return
	}
	m.tunnelsOpen.Dec()
	m.tunnelDuration.Observe(d.Seconds())
}

// AddBytes adds relayed bytes. Calling it as bytes move, rather than once
// at the end, keeps rate() honest for tunnels that live for hours; each
// call is two atomic adds.
func (m *metrics) AddBytes(up, down int64) {
	if m == nil {
		return
	}
	if up > 0 {
		m.bytesUp.Add(float64(up))
	}
	if down > 0 {
		m.bytesDown.Add(float64(down))
	}
}

// ObserveDial records how long a dial took, whether it succeeded or not.
func (m *metrics) ObserveDial(d time.Duration) {
	if m == nil {
		return
	}
	m.dialDuration.Observe(d.Seconds())
}

// ObserveQueueWait records the time a request spent queued for a slot
// (limit.Slot.Waited or limit.Error.Waited). Call it only for requests that
// queued, so the histogram is not swamped by zeros.
func (m *metrics) ObserveQueueWait(d time.Duration) {
	if m == nil {
		return
	}
	m.queueWait.Observe(d.Seconds())
}

// AuthFailed counts a failed authentication.
func (m *metrics) AuthFailed(reason authFailure) {
	if m == nil {
		return
	}
	m.authFailures[reason].Inc()
}

// ACLDenied counts a request the ACL refused under the named rule ("" for
// the default deny, labelled "default"). Rule names come from the
// operator's config, so the label set stays bounded.
func (m *metrics) ACLDenied(rule string) {
	if m == nil {
		return
	}
	if rule == "" {
		rule = defaultACLRule
	}
	m.aclDenials.WithLabelValues(rule).Inc()
}

// ACLWouldDeny counts a request the ACL only reported under the named
// rule ("" or RuleDefault: the default); the request went on.
func (m *metrics) ACLWouldDeny(rule string) {
	if m == nil {
		return
	}
	if rule == "" {
		rule = defaultACLRule
	}
	m.aclWouldDeny.WithLabelValues(rule).Inc()
}

// InitACLRules creates the denial and would-deny series of the named
// rules at 0, so they show before the first one. Call it after loading
// the config.
func (m *metrics) InitACLRules(rules ...string) {
	if m == nil {
		return
	}
	for _, r := range rules {
		if r != "" {
			m.aclDenials.WithLabelValues(r)
			m.aclWouldDeny.WithLabelValues(r)
		}
	}
}

// LimitRefused counts a request refused because limit kind k was full
// (the *limit.Error's Kind, or limit.KindPending for the Gate).
func (m *metrics) LimitRefused(k limit.Kind) {
	if m == nil || k < 0 || k >= limit.NumKinds {
		return
	}
	m.limitRefusals[k].Inc()
}

// ConnRefused counts a connection closed at accept by a connection cap
// (listen.KindConns or listen.KindConnsPerIP).
func (m *metrics) ConnRefused(k listen.Kind) {
	if m == nil {
		return
	}
	switch k {
	case listen.KindConns:
		m.connRefusals[0].Inc()
	case listen.KindConnsPerIP:
		m.connRefusals[1].Inc()
	}
}

// SetConnSource sets the function read at every scrape for
// wsegress_client_conns. It must be safe to call from any goroutine.
func (m *metrics) SetConnSource(f func() int) {
	if m == nil || f == nil {
		return
	}
	m.conns.Store(&f)
}

// Request counts a received proxy request.
func (m *metrics) Request(kind requestKind) {
	if m == nil {
		return
	}
	m.requests[kind].Inc()
}

// SetPoolSource sets the function read at every scrape for the pool
// gauges, typically
//
//	func() []limit.Usage { return append(lim.Usage(), gate.Usage()) }
//
// It must be safe to call from any goroutine. nil removes the source.
func (m *metrics) SetPoolSource(f func() []limit.Usage) {
	if m == nil {
		return
	}
	if f == nil {
		m.pool.Store(nil)
		return
	}
	m.pool.Store(&f)
}

// poolCollector turns the pool source into gauges at scrape time, so the
// request path pays nothing for them.
type poolCollector struct {
	m                        *metrics
	inUse, capacity, waiting *prometheus.Desc
}

func newPoolCollector(m *metrics) *poolCollector {
	kind := []string{"kind"}
	return &poolCollector{
		m: m,
		inUse: prometheus.NewDesc("wsegress_pool_slots_in_use",
			"Tunnel slots in use per limit kind; for user, client_ip and host: of the key closest to its cap.", kind, nil),
		capacity: prometheus.NewDesc("wsegress_pool_slots_capacity",
			"Tunnel slot limit per kind (0: unlimited); for user, client_ip and host: of the key closest to its cap.", kind, nil),
		waiting: prometheus.NewDesc("wsegress_queue_waiting",
			"Requests queued for a tunnel slot, by the limit kind holding them back.", kind, nil),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inUse
	ch <- c.capacity
	ch <- c.waiting
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.m.pool.Load()
	if f == nil {
		return
	}
	for _, u := range (*f)() {
		kind := u.Kind.String()
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(u.InUse), kind)
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(u.Capacity), kind)
		if u.Kind != limit.KindPending {
			ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(u.Waiting), kind)
		}
	}
}

// Handler serves /metrics (the owned registry), /healthz (200 "ok" while
// the process runs) and /readyz (200 "ready" while ready returns nil, else
// 503 with the error's text, which must hold no secrets). A nil ready
// means always ready. On a nil *metrics, /metrics is 404.
func (m *metrics) Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	if m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
			// A collector that fails (say /proc is unreadable) should
			// not blank the proxy's own metrics.
			ErrorHandling:       promhttp.ContinueOnError,
			MaxRequestsInFlight: 4,
		}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeHealth(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				writeHealth(w, http.StatusServiceUnavailable, err.Error())
				return
			}
		}
		writeHealth(w, http.StatusOK, "ready")
	})
	return mux
}

func writeHealth(w http.ResponseWriter, status int, text string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text + "\n"))
}
