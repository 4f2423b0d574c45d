package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/auth"
	"github.com/wsegress/wsegress/proxy/limit"
	"github.com/wsegress/wsegress/proxy/relay"
)

// Server is a running proxy. Create it with New, start it with Serve or
// ListenAndServe, stop it with Shutdown. It owns every tunnel it opens:
// http.Server.Shutdown does not wait for hijacked connections
// (golang/go#17721), so the Server tracks them itself.
type Server struct {
	log     *slog.Logger
	dialer  *dialer
	relay   relay.Relay
	limiter *limit.Limiter
	pending *limit.Gate
	metrics *metrics
	http    *http.Server
	gp      *goproxy.ProxyHttpServer

	// state is the configuration snapshot, swapped whole on Reload (under
	// mu) and read once per request, never mutated.
	state atomic.Pointer[state]

	// baseCtx parents every request and tunnel; cancelling it force-closes
	// all tunnels at the end of Shutdown.
	baseCtx    context.Context
	cancelBase context.CancelFunc

	mu         sync.Mutex // guards the following fields
	tunnels    map[*tunnel]struct{}
	draining   bool
	self       acl.Options    // the proxy's own addresses, denied as targets
	metricsSrv []*http.Server // started by ServeMetrics, closed last by Shutdown
	wg         sync.WaitGroup // one per CONNECT or upgrade in progress or established
}

// state is what a reload replaces: the configuration and what is compiled
// from it. Read once per request, never mutated.
type state struct {
	cfg    Config
	policy *acl.Policy
	auth   *auth.Authenticator // nil: no authentication
}

// New validates cfg and builds a Server. log, if nil, discards.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d, err := newDialer(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:     log,
		dialer:  d,
		limiter: limit.New(cfg.Limits),
		pending: new(limit.Gate), // always counted, so metrics show it and a reload can set a limit
		metrics: newMetrics(),
		tunnels: make(map[*tunnel]struct{}),
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.pending.SetLimit(cfg.MaxPending)
	s.relay = relay.Relay{IdleTimeout: cfg.IdleTimeout, WriteTimeout: cfg.WriteTimeout, OnBytes: s.countBytes}
	s.metrics.SetPoolSource(s.poolUsage)
	st, err := s.buildState(cfg, acl.Options{}, nil)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	s.gp = s.newGoproxy(cfg)
	s.http = &http.Server{
		Handler:                      s,
		ReadHeaderTimeout:            cfg.HeaderTimeout,
		IdleTimeout:                  2 * time.Minute,
		MaxHeaderBytes:               cfg.MaxHeaderBytes,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:                  func(net.Listener) context.Context { return s.baseCtx },
		ConnContext:                  withConnInfo,
	}
	return s, nil
}

// buildState compiles the policy and loads (or reloads) the users.
func (s *Server) buildState(cfg Config, self acl.Options, old *state) (*state, error) {
	pol, err := acl.Compile(cfg.ACL, self)
	if err != nil {
		return nil, fmt.Errorf("acl: %w", err)
	}
	st := &state{cfg: cfg, policy: pol}
	names := []string{acl.RuleDefault, acl.RuleNonPublic, acl.RuleSelf}
	for _, r := range pol.Rules() {
		names = append(names, r.Name)
	}
	s.metrics.InitACLRules(names...)
	if cfg.Htpasswd == "" {
		return st, nil
	}
	// Update in place, whatever changed: throttle state and the cache
	// entries of unchanged users survive a reload (issue 11).
	if old != nil && old.auth != nil {
		if err := old.auth.Update(cfg.Htpasswd, cfg.Groups, cfg.Auth); err != nil {
			return nil, err
		}
		st.auth = old.auth
		return st, nil
	}
	a, err := auth.New(cfg.Htpasswd, cfg.Groups, cfg.Auth)
	if err != nil {
		return nil, err
	}
	st.auth = a
	return st, nil
}

// Reload applies a new configuration to new requests: users, groups and
// their options, realm, ACL and limits. Open tunnels are never touched; a
// lowered limit only refuses new tunnels until usage drops. Every other
// field (listen address, timeouts, upstream...) is fixed at New. On error
// nothing changes.
func (s *Server) Reload(cfg Config) error {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.state.Load()
	st, err := s.buildState(cfg.reloadInto(old.cfg), s.self, old)
	if err != nil {
		return err
	}
	s.state.Store(st)
	s.limiter.SetLimits(cfg.Limits)
	s.pending.SetLimit(cfg.MaxPending)
	return nil
}

// ListenAndServe listens on the configured address and serves until
// Shutdown. It always returns a non-nil error (http.ErrServerClosed after
// Shutdown).
func (s *Server) ListenAndServe() error {
	cfg := s.state.Load().cfg
	lc := net.ListenConfig{KeepAlive: cfg.KeepAlive}
	ln, err := lc.Listen(s.baseCtx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	return s.Serve(ln)
}

// Serve accepts proxy connections on ln until Shutdown. Serve always
// returns a non-nil error and closes ln. The proxy's own address is added
// to the policy's built-in denies, so a client cannot loop it into itself.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.addSelf(ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	s.log.Info("listening", keyAddr, ln.Addr().String())
	return s.http.Serve(ln)
}

// ServeMetrics serves /metrics, /healthz and /readyz on ln until
// Shutdown, which closes it last (so /readyz reports the drain). Like
// Serve it returns a non-nil error, and it denies ln's address as a
// target: clients must not reach the metrics through the proxy.
func (s *Server) ServeMetrics(ln net.Listener) error {
	if err := s.addSelf(ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	hs := &http.Server{Handler: s.MetricsHandler(), ReadHeaderTimeout: s.state.Load().cfg.HeaderTimeout}
	s.mu.Lock()
	s.metricsSrv = append(s.metricsSrv, hs)
	s.mu.Unlock()
	s.log.Info("metrics listening", keyAddr, ln.Addr().String())
	return hs.Serve(ln)
}

// addSelf adds one of the proxy's own listening addresses to the denies.
func (s *Server) addSelf(a net.Addr) error {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return nil // not an IP listener: nothing a client could dial
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.self.SelfAddrs = append(s.self.SelfAddrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	if ap.Addr().IsUnspecified() && s.self.LocalAddrs == nil {
		// Listening on every interface: any local address is us.
		s.self.LocalAddrs, _ = acl.LocalAddrs()
	}
	old := s.state.Load()
	st, err := s.buildState(old.cfg, s.self, old)
	if err != nil {
		return err
	}
	s.state.Store(st)
	return nil
}

// Shutdown stops accepting, waits for open tunnels to end until ctx is
// done, then closes what is left and waits for it to wind down. It returns
// ctx.Err() if tunnels had to be closed by force.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	open := len(s.tunnels)
	s.mu.Unlock()
	s.log.Info("draining", keyTunnels, open)

	// Stops the listener and waits for requests still being handled (a
	// CONNECT between accept and its 200); hijacked tunnels are ours.
	err := s.http.Shutdown(ctx)

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	// Cancelling the base context ends everything that is left: pending
	// dials, relays (through the relay's own context; nothing closes a
	// socket under it), and tunnels still in their handshake after hijack
	// (each tunnel closes its own conns, see tunnel.hijack).
	s.cancelBase()
	s.http.Close()
	s.mu.Lock()
	metricsSrv := s.metricsSrv
	s.mu.Unlock()
	<-done
	for _, hs := range metricsSrv {
		hs.Close()
	}
	return err
}

// enter registers a request that may become a tunnel, from before its
// dial until its tunnel ends. It fails once Shutdown has begun, so no
// WaitGroup.Add races the final Wait, and a request between its dial and
// its 200 is waited for too (http.Server.Shutdown stops waiting for a
// connection the moment it is hijacked).
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.wg.Add(1)
	return true
}

// leave ends what enter began.
func (s *Server) leave() { s.wg.Done() }

// track lists an established tunnel (for OpenTunnels and logs).
func (s *Server) track(t *tunnel) {
	s.mu.Lock()
	s.tunnels[t] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrack(t *tunnel) {
	s.mu.Lock()
	delete(s.tunnels, t)
	s.mu.Unlock()
}

// OpenTunnels reports how many tunnels are established right now.
func (s *Server) OpenTunnels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tunnels)
}

// MetricsHandler serves /metrics, /healthz and /readyz for this server.
func (s *Server) MetricsHandler() http.Handler { return s.metrics.Handler(s.ready) }

// ready is nil when the proxy takes new tunnels.
func (s *Server) ready() error {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		return errors.New("draining")
	}
	if !s.state.Load().cfg.ReadyWhenFull && s.limiter.Full() {
		return errors.New("tunnel pool full")
	}
	return nil
}

// countBytes feeds the byte counters as tunnels move data.
func (s *Server) countBytes(up bool, n int64) {
	if n == 0 {
		return
	}
	if up {
		s.metrics.AddBytes(n, 0)
	} else {
		s.metrics.AddBytes(0, n)
	}
}

// poolUsage feeds the pool gauges at scrape time.
func (s *Server) poolUsage() []limit.Usage {
	u := s.limiter.Usage()
	return append(u, s.pending.Usage())
}

var _ http.Handler = (*Server)(nil)
