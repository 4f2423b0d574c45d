package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/auth"
	"github.com/wsegress/wsegress/proxy/limit"
	"github.com/wsegress/wsegress/proxy/listen"
	"github.com/wsegress/wsegress/proxy/pac"
	"github.com/wsegress/wsegress/proxy/relay"
	"github.com/wsegress/wsegress/proxy/tlsconf"
)

// Server is a running proxy. Create it with New, start it with Serve or
// ListenAndServe, stop it with Shutdown. It owns every tunnel it opens:
// http.Server.Shutdown does not wait for hijacked connections
// (golang/go#17721), so the Server tracks them itself.
type Server struct {
	log     *slog.Logger
	relay   relay.Relay
	limiter *limit.Limiter
	pending *limit.Gate
	metrics *metrics
	http    *http.Server
	gp      *goproxy.ProxyHttpServer
	refusal *refusalLog // logs connections refused at accept, rate-limited
	// caps counts the connections of every client listener Serve and
	// ServeTLS wrap, so --max-conns and --max-conns-per-ip hold for the
	// process, however many sockets it listens on.
	caps *listen.Caps

	// tls, if non-nil, holds the TLS listener's certificates (TLSCert);
	// userMode names the user of a client certificate. Both fixed at New.
	tls      *tlsconf.Store
	userMode tlsconf.UserMode
	tlsOnce  sync.Once      // starts the store's file watch
	bg       sync.WaitGroup // background goroutines, ended by Shutdown

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
	handover   bool           // the listeners were handed to a successor process (Handover)
	self       acl.Options    // the proxy's own addresses, denied as targets
	metricsSrv []*http.Server // started by ServeMetrics, closed last by Shutdown
	wg         sync.WaitGroup // one per CONNECT or upgrade in progress or established
	serving    sync.WaitGroup // one per Serve still in its accept loop
	accepting  []net.Listener // raw sockets being served (Serve, ServeTLS), closed by stopAccepting

	busyMu sync.Mutex            // guards busy
	busy   map[net.Conn]struct{} // client conns net/http has not closed or handed over (see connState)
}

// state is what a reload replaces: the configuration and what is compiled
// from it. Read once per request, never mutated.
type state struct {
	cfg    Config
	policy *acl.Policy
	auth   *auth.Authenticator // nil: no Basic authentication
	// groups maps client-certificate users to their groups when there is
	// no Basic auth (with it, auth.Groups serves both).
	groups map[string][]string
	pac    *pac.File // nil: no PAC file
	dialer *dialer   // kept across reloads unless the upstream changed
}

// groupsOf returns the groups of an authenticated user.
func (st *state) groupsOf(user string) []string {
	if st.auth != nil {
		return st.auth.Groups(user)
	}
	return slices.Clone(st.groups[user])
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
	s := &Server{
		log:     log,
		refusal: &refusalLog{log: log},
		limiter: limit.New(cfg.Limits),
		pending: new(limit.Gate), // always counted, so metrics show it and a reload can set a limit
		metrics: newMetrics(),
		tunnels: make(map[*tunnel]struct{}),
		busy:    make(map[net.Conn]struct{}),
	}
	s.caps = listen.NewCaps(cfg.ConnCaps())
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.pending.SetLimit(cfg.MaxPending)
	s.relay = relay.Relay{IdleTimeout: cfg.IdleTimeout, WriteTimeout: cfg.WriteTimeout, OnBytes: s.countBytes}
	s.metrics.SetPoolSource(s.poolUsage)
	var err error
	if s.tls, s.userMode, err = newTLSStore(cfg, log); err != nil {
		return nil, err
	}
	s.metrics.SetConnSource(s.clientConns)
	st, err := s.buildState(cfg, acl.Options{}, nil)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	s.gp = s.newGoproxy(cfg)
	s.http = &http.Server{
		Handler:                      s,
		ReadHeaderTimeout:            cfg.HeaderTimeout,
		IdleTimeout:                  cfg.HeaderTimeout, // idle between requests (after a 407, say): a slot and an fd
		MaxHeaderBytes:               cfg.MaxHeaderBytes,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:                  func(net.Listener) context.Context { return s.baseCtx },
		ConnContext:                  withConnInfo,
		ConnState:                    s.connState,
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
	if old != nil && sameUpstream(old.cfg.Upstream, cfg.Upstream) {
		st.dialer = old.dialer
	} else if st.dialer, err = newDialer(cfg); err != nil {
		return nil, err
	}
	names := []string{acl.RuleDefault, acl.RuleNonPublic, acl.RuleSelf}
	for _, r := range pol.Rules() {
		names = append(names, r.Name)
	}
	s.metrics.InitACLRules(names...)
	if st.pac, err = cfg.pacFile(); err != nil {
		return nil, err
	}
	if cfg.Htpasswd == "" {
		if cfg.TLSClientCA != "" {
			if st.groups, err = auth.LoadGroups(cfg.Groups, cfg.Auth.Groups); err != nil {
				return nil, err
			}
		}
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
// their options (throttle state and unchanged users' cache entries
// survive), realm, ACL, first-bytes checks, tunnel limits and connection caps, the upstream,
// the PAC file, and the settings read per request (--dial-timeout,
// --body-timeout, --max-auth-retries, --queue-timeout, --ready-when-full).
// It also re-reads the TLS certificate, key and client CAs (whose file
// names are fixed at New); a bad certificate file keeps the previous one in
// use and is logged by the TLS store, without failing the rest of the
// reload. Open tunnels are never touched; a lowered limit only refuses new
// tunnels until usage drops. The other settings (listen addresses, PROXY
// protocol sources, header, idle and response-header timeouts, header
// size, keep-alive, TLS file names) are fixed at start: a change to one is
// logged as a warning naming it and otherwise ignored. On error nothing
// changes.
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
	for _, name := range cfg.fixedChanges(old.cfg) {
		s.log.Warn("reload cannot change this setting: restart to apply it; the running value stays", keySetting, "--"+name)
	}
	s.state.Store(st)
	s.limiter.SetLimits(cfg.Limits)
	s.pending.SetLimit(cfg.MaxPending)
	if s.tls != nil {
		_ = s.tls.Reload() // logged by the store; the old certificate stays
	}
	s.caps.SetLimits(st.cfg.ConnCaps())
	return nil
}

// ListenAndServe listens on the configured address (and on TLSListen, if
// set) and serves until Shutdown. It always returns a non-nil error
// (http.ErrServerClosed after Shutdown): the first of its listeners' errors.
func (s *Server) ListenAndServe() error {
	cfg := s.state.Load().cfg
	lc := net.ListenConfig{KeepAlive: -1} // per tunnel, later: see armKeepAlive
	ln, err := lc.Listen(s.baseCtx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if cfg.TLSListen == "" {
		return s.Serve(ln)
	}
	tln, err := lc.Listen(s.baseCtx, "tcp", cfg.TLSListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("tls-listen %s: %w", cfg.TLSListen, err)
	}
	errc := make(chan error, 2)
	go func() { errc <- s.ServeTLS(tln) }()
	go func() { errc <- s.Serve(ln) }()
	return <-errc
}

// Serve accepts proxy connections on ln until Shutdown. It speaks TLS on
// them when TLS is on and no TLSListen is set (see ServeTLS). Serve always
// returns a non-nil error and closes ln. The proxy's own address is added
// to the policy's built-in denies, so a client cannot loop it into itself.
// ln is wrapped in a listen.Listener: connections are capped from accept
// (MaxConns, MaxConnsPerIP, counted over every listener the Server serves)
// and PROXY headers honoured from ProxyProtocolFrom.
func (s *Server) Serve(ln net.Listener) error {
	return s.serve(ln, s.tls != nil && s.state.Load().cfg.TLSListen == "")
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
	hs := newMetricsServer(s.MetricsHandler(), s.state.Load().cfg.HeaderTimeout)
	s.mu.Lock()
	s.metricsSrv = append(s.metricsSrv, hs)
	s.mu.Unlock()
	s.log.Info("metrics listening", keyAddr, ln.Addr().String())
	return hs.Serve(listen.New(ln, listen.Config{Caps: listen.NewCaps(metricsMaxConns, metricsMaxConnsPerIP)}))
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

// Shutdown stops accepting, answers the connections already accepted,
// waits for open tunnels to end until ctx is done, then closes what is
// left and waits for it to wind down. It returns ctx.Err() if tunnels had
// to be closed by force.
//
// No accepted connection is closed without an answer while ctx lasts: a
// request read before the drain began is served as usual (a CONNECT gets
// its tunnel, which is then drained), and one that arrives after, on a
// connection accepted before (new, or idle after an earlier answer), gets
// 503 "proxy shutting down" with Retry-After and Connection: close. A
// connection that sends nothing is closed by --header-timeout. Only
// connections not yet handed to net/http (still in the listen backlog,
// or still sending their PROXY header) are closed unanswered.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	open := len(s.tunnels)
	s.mu.Unlock()
	s.log.Info("draining", keyTunnels, open)

	err := s.stopAccepting(ctx)
	// Waits for requests still being handled (a CONNECT between accept
	// and its 200) and closes idle conns; hijacked tunnels are ours.
	if herr := s.http.Shutdown(ctx); err == nil {
		err = herr
	}

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
	s.bg.Wait()
	return err
}

// Handover is Shutdown for a process that has handed its listening
// sockets to a successor (wsegress's SIGUSR2): the successor now accepts
// on them, so this Server stops accepting at once and /readyz reports
// "handing over". Its metrics servers stop too (the successor answers on
// their sockets). Unlike Shutdown, a request on a connection already
// accepted is served, not dropped: a client that connected just before
// the handover must not see its connection closed. Then it drains like
// Shutdown: open tunnels run until they end or ctx is done.
func (s *Server) Handover(ctx context.Context) error {
	s.mu.Lock()
	s.handover = true
	metricsSrv := s.metricsSrv
	s.metricsSrv = nil
	open := len(s.tunnels)
	s.mu.Unlock()
	s.log.Info("handing over", keyTunnels, open)

	var wg sync.WaitGroup
	for _, hs := range metricsSrv {
		wg.Go(func() { _ = hs.Shutdown(ctx) })
	}
	// Requests on accepted conns are served (not refused as draining)
	// until every one has had its answer; then Shutdown drains.
	_ = s.stopAccepting(ctx) // Shutdown reports ctx's error
	wg.Wait()
	for _, hs := range metricsSrv {
		hs.Close()
	}
	return s.Shutdown(ctx)
}

// stopAccepting closes the client listeners, lets the accept loops end and
// waits until every accepted conn has been closed or hijacked, or ctx is
// done (then it returns ctx.Err()). Not http.Server.Shutdown: from its
// start net/http closes, with no answer, every conn it has not read a
// request on (new and idle ones) and drops a request it reads after
// that. So until this returns the conns get their answers: those of a
// draining proxy when Shutdown called it, the usual ones for Handover
// (whose successor accepts on the same sockets). An idle conn ends at
// --header-timeout (http.Server.IdleTimeout) unless it sends a request.
//
// It closes the raw sockets, under the listen.Listener: a conn that
// Listener has accepted (and counted) is still handed to net/http before
// its accept loop sees the close, so it gets its answer too.
func (s *Server) stopAccepting(ctx context.Context) error {
	s.mu.Lock()
	accepting := s.accepting
	s.accepting = nil
	s.mu.Unlock()
	for _, ln := range accepting {
		ln.Close()
	}
	s.serving.Wait()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.busyConns() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// connState tracks the client conns net/http holds, from accept until it
// closes one or hands it to a tunnel (idle ones too: a request may still
// come on them), for stopAccepting.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.busyMu.Lock()
	if st == http.StateHijacked || st == http.StateClosed {
		delete(s.busy, c)
	} else {
		s.busy[c] = struct{}{}
	}
	s.busyMu.Unlock()
}

func (s *Server) busyConns() int {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	return len(s.busy)
}

// RecordHandover counts a handover of the listening sockets in
// wsegress_handover_total: ok in the process that took over, failed in
// the one whose attempt failed.
func (s *Server) RecordHandover(ok bool) { s.metrics.Handover(ok) }

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
// It serves the PAC file at /proxy.pac too, when PACProxy is set.
func (s *Server) MetricsHandler() http.Handler {
	h := s.metrics.Handler(s.ready)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.servePAC(w, r, s.state.Load()) {
			h.ServeHTTP(w, r)
		}
	})
}

// ready is nil when the proxy takes new tunnels.
func (s *Server) ready() error {
	s.mu.Lock()
	draining, handover := s.draining, s.handover
	s.mu.Unlock()
	if handover {
		return errors.New("handing over")
	}
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
