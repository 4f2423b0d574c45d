package proxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wsegress/wsegress/proxy/limit"
)

// metricsScrape GETs /metrics from srv and returns every sample keyed by
// its name and labels as printed, e.g. `wsegress_tunnels_total{result="ok"}`.
func metricsScrape(t *testing.T, srv *httptest.Server) map[string]float64 {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d", resp.StatusCode)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("scrape: malformed line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return samples
}

func metricsWant(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		v, ok := got[k]
		if !ok {
			t.Errorf("scrape: %s missing", k)
		} else if v != w {
			t.Errorf("scrape: %s = %v; want %v", k, v, w)
		}
	}
}

func TestMetricsScrape(t *testing.T) {
	m := newMetrics()
	lim := limit.New(Limits{Global: 10, PerUser: 3, PerIP: 4})
	gate := limit.NewGate(7)
	m.SetPoolSource(func() []limit.Usage { return append(lim.Usage(), gate.Usage()) })
	srv := httptest.NewServer(m.Handler(nil)) // listens on 127.0.0.1:0
	t.Cleanup(srv.Close)

	before := metricsScrape(t, srv)
	zero := map[string]float64{
		`wsegress_tunnels_open`:                               0,
		`wsegress_bytes_total{direction="up"}`:                0,
		`wsegress_bytes_total{direction="down"}`:              0,
		`wsegress_acl_denials_total{rule="default"}`:          0,
		`wsegress_tunnel_duration_seconds_count`:              0,
		`wsegress_dial_duration_seconds_count`:                0,
		`wsegress_queue_wait_seconds_count`:                   0,
		`wsegress_pool_slots_in_use{kind="global"}`:           0,
		`wsegress_pool_slots_capacity{kind="global"}`:         10,
		`wsegress_pool_slots_capacity{kind="user"}`:           3,
		`wsegress_pool_slots_capacity{kind="client_ip"}`:      4,
		`wsegress_pool_slots_capacity{kind="host"}`:           0,
		`wsegress_pool_slots_capacity{kind="pending"}`:        7,
		`wsegress_queue_waiting{kind="global"}`:               0,
		`wsegress_tunnel_duration_seconds_bucket{le="86400"}`: 0,
	}
	for r := range numResults {
		zero[`wsegress_tunnels_total{result="`+r.String()+`"}`] = 0
	}
	for a := range numAuthFailures {
		zero[`wsegress_auth_failures_total{reason="`+a.String()+`"}`] = 0
	}
	for k := range limit.NumKinds {
		zero[`wsegress_limit_refusals_total{kind="`+k.String()+`"}`] = 0
	}
	for k := range numRequestKinds {
		zero[`wsegress_requests_total{kind="`+k.String()+`"}`] = 0
	}
	metricsWant(t, before, zero)
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if _, ok := before[name]; !ok {
			t.Errorf("scrape: %s missing (Go/process collectors not registered)", name)
		}
	}

	// Traffic: two tunnels, one of them closed, one refused by the pool.
	k := limit.Key{User: "alice", ClientIP: netip.MustParseAddr("192.0.2.1"), Host: "example.com"}
	s1, err1 := lim.Acquire(t.Context(), k, 0)
	s2, err2 := lim.Acquire(t.Context(), k, 0)
	if err1 != nil || err2 != nil {
		t.Fatalf("Acquire: %v, %v", err1, err2)
	}
	t.Cleanup(s1.Release)
	t.Cleanup(s2.Release)
	if !gate.TryEnter() {
		t.Fatal("gate refused")
	}
	t.Cleanup(gate.Leave)
	m.Request(requestConnect)
	m.Request(requestConnect)
	m.Request(requestConnect)
	m.Request(requestHTTP)
	m.TunnelResult(resultOK)
	m.TunnelResult(resultOK)
	m.TunnelResult(resultLimited)
	m.TunnelResult(resultError)
	m.LimitRefused(limit.KindUser)
	m.LimitRefused(limit.Kind(42)) // ignored
	m.TunnelOpened()
	m.TunnelOpened()
	m.TunnelClosed(90 * time.Minute)
	m.AddBytes(1000, 250000)
	m.AddBytes(24, 0)
	m.ObserveDial(3 * time.Millisecond)
	m.ObserveQueueWait(200 * time.Millisecond)
	m.AuthFailed(authMissing)
	m.AuthFailed(authThrottled)
	m.AuthFailed(authInvalid)
	m.InitACLRules("block-metadata", "internal")
	m.ACLDenied("block-metadata")
	m.ACLDenied("")

	after := metricsScrape(t, srv)
	metricsWant(t, after, map[string]float64{
		`wsegress_requests_total{kind="connect"}`:            3,
		`wsegress_requests_total{kind="http"}`:               1,
		`wsegress_requests_total{kind="upgrade"}`:            0,
		`wsegress_tunnels_total{result="ok"}`:                2,
		`wsegress_tunnels_total{result="limited"}`:           1,
		`wsegress_tunnels_total{result="error"}`:             1,
		`wsegress_tunnels_total{result="timeout"}`:           0,
		`wsegress_limit_refusals_total{kind="user"}`:         1,
		`wsegress_limit_refusals_total{kind="global"}`:       0,
		`wsegress_tunnels_open`:                              1,
		`wsegress_tunnel_duration_seconds_count`:             1,
		`wsegress_tunnel_duration_seconds_sum`:               5400,
		`wsegress_tunnel_duration_seconds_bucket{le="3600"}`: 0,
		`wsegress_tunnel_duration_seconds_bucket{le="7200"}`: 1,
		`wsegress_bytes_total{direction="up"}`:               1024,
		`wsegress_bytes_total{direction="down"}`:             250000,
		`wsegress_dial_duration_seconds_count`:               1,
		`wsegress_dial_duration_seconds_bucket{le="0.0025"}`: 0,
		`wsegress_dial_duration_seconds_bucket{le="0.005"}`:  1,
		`wsegress_queue_wait_seconds_count`:                  1,
		`wsegress_queue_wait_seconds_bucket{le="0.25"}`:      1,
		`wsegress_auth_failures_total{reason="missing"}`:     1,
		`wsegress_auth_failures_total{reason="invalid"}`:     1,
		`wsegress_auth_failures_total{reason="throttled"}`:   1,
		`wsegress_acl_denials_total{rule="block-metadata"}`:  1,
		`wsegress_acl_denials_total{rule="internal"}`:        0,
		`wsegress_acl_denials_total{rule="default"}`:         1,
		`wsegress_pool_slots_in_use{kind="global"}`:          2,
		`wsegress_pool_slots_in_use{kind="user"}`:            2,
		`wsegress_pool_slots_capacity{kind="user"}`:          3,
		`wsegress_pool_slots_in_use{kind="client_ip"}`:       2,
		`wsegress_pool_slots_in_use{kind="host"}`:            2,
		`wsegress_pool_slots_capacity{kind="host"}`:          0,
		`wsegress_pool_slots_in_use{kind="pending"}`:         1,
		`wsegress_queue_waiting{kind="global"}`:              0,
	})

	// The pool gauges are read at scrape time: a queued waiter shows.
	s3, err := lim.Acquire(t.Context(), k, 0)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan *limit.Slot, 1)
	go func() {
		s, _ := lim.Acquire(t.Context(), k, time.Minute)
		queued <- s
	}()
	eventually(t, 10*time.Second, "one waiter", func() bool { return lim.Waiting() == 1 })
	metricsWant(t, metricsScrape(t, srv), map[string]float64{
		`wsegress_pool_slots_in_use{kind="user"}`:  3,
		`wsegress_queue_waiting{kind="user"}`:      1,
		`wsegress_queue_waiting{kind="client_ip"}`: 0,
	})
	s3.Release()
	if s := <-queued; s == nil {
		t.Fatal("the queued Acquire failed")
	} else {
		s.Release()
	}

	// Without a source the pool gauges disappear rather than lie.
	m.SetPoolSource(nil)
	if _, ok := metricsScrape(t, srv)[`wsegress_pool_slots_in_use{kind="global"}`]; ok {
		t.Error("pool gauges still served after SetPoolSource(nil)")
	}
}

func TestMetricsOwnRegistry(t *testing.T) {
	a, b := newMetrics(), newMetrics() // would panic on a shared registry
	a.TunnelResult(resultOK)
	if a.Registry() == b.Registry() || a.Registry() == prometheus.DefaultRegisterer {
		t.Fatal("Metrics share a registry")
	}
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("gather default registry: %v", err)
	}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "wsegress_") {
			t.Errorf("%s registered on the global default registry", f.GetName())
		}
	}
}

func TestMetricsHealth(t *testing.T) {
	var notReady atomic.Pointer[error]
	ready := func() error {
		if e := notReady.Load(); e != nil {
			return *e
		}
		return nil
	}
	srv := httptest.NewServer(newMetrics().Handler(ready))
	t.Cleanup(srv.Close)
	get := func(method, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: read body: %v", method, path, err)
		}
		return resp.StatusCode, string(body)
	}
	check := func(method, path string, wantCode int, wantBody string) {
		t.Helper()
		code, body := get(method, path)
		if code != wantCode || (wantBody != "" && body != wantBody) {
			t.Errorf("%s %s = %d %q; want %d %q", method, path, code, body, wantCode, wantBody)
		}
	}
	check("GET", "/healthz", 200, "ok\n")
	check("GET", "/readyz", 200, "ready\n")
	draining := errors.New("draining")
	notReady.Store(&draining)
	check("GET", "/readyz", 503, "draining\n")
	check("GET", "/healthz", 200, "ok\n") // alive while not ready
	notReady.Store(nil)
	check("GET", "/readyz", 200, "ready\n")
	check("HEAD", "/healthz", 200, "")
	check("POST", "/healthz", 405, "")
	check("GET", "/nope", 404, "")

	// A nil Metrics still answers health checks, and nil ready means ready.
	var nilM *metrics
	srv2 := httptest.NewServer(nilM.Handler(nil))
	t.Cleanup(srv2.Close)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 404} {
		resp, err := srv2.Client().Get(srv2.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("nil Metrics: GET %s = %d; want %d", path, resp.StatusCode, want)
		}
	}
}

func TestMetricsNil(t *testing.T) {
	var m *metrics
	m.TunnelResult(resultOK)
	m.TunnelOpened()
	m.TunnelClosed(time.Second)
	m.AddBytes(1, 2)
	m.ObserveDial(time.Millisecond)
	m.ObserveQueueWait(time.Millisecond)
	m.AuthFailed(authInvalid)
	m.ACLDenied("r")
	m.InitACLRules("r")
	m.LimitRefused(limit.KindGlobal)
	m.Request(requestConnect)
	m.SetPoolSource(func() []limit.Usage { return nil })
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
}

// BenchmarkMetricsTunnel is the metrics cost of one tunnel's life.
func BenchmarkMetricsTunnel(b *testing.B) {
	m := newMetrics()
	b.ReportAllocs()
	for b.Loop() {
		m.Request(requestConnect)
		m.ObserveDial(2 * time.Millisecond)
		m.TunnelResult(resultOK)
		m.TunnelOpened()
		m.AddBytes(512, 4096)
		m.TunnelClosed(3 * time.Second)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestJitter(t *testing.T) {
	const d = time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		j := jitter(d)
		if j < d-d/10 || j > d+d/10 {
			t.Fatalf("jitter(%v) = %v; want within ±10%%", d, j)
		}
		seen[j] = true
	}
	if len(seen) < 100 {
		t.Errorf("jitter(%v) took %d distinct values in 1000 draws; want spread", d, len(seen))
	}
}
