package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/wsegress/wsegress/proxy/listen"
	"github.com/wsegress/wsegress/proxy/pac"
	"github.com/wsegress/wsegress/proxy/tlsconf"
)

// pacPath is where the PAC file is served, on the proxy listeners (as a
// plain origin-form GET) and on the metrics listener.
const pacPath = "/proxy.pac"

// How a request's user was authenticated, for the auth key of log lines.
const (
	authByNone  = "none"
	authByCert  = "cert"
	authByBasic = "basic"
)

// tlsOn reports whether TLS to the proxy is configured.
func (c Config) tlsOn() bool { return c.TLSCert != "" || c.TLSKey != "" }

// validateTLS checks the TLS and PAC settings; certsRequired means the TLS
// listener requires a client certificate (client CA, no Basic auth).
func (c Config) validateTLS(certsRequired bool) []error {
	var errs []error
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		errs = append(errs, errors.New("--tls-cert needs --tls-key"))
	case c.TLSKey != "" && c.TLSCert == "":
		errs = append(errs, errors.New("--tls-key needs --tls-cert"))
	}
	if c.TLSListen != "" {
		host, _, err := net.SplitHostPort(c.TLSListen)
		switch {
		case !c.tlsOn():
			errs = append(errs, errors.New("--tls-listen needs --tls-cert and --tls-key"))
		case err != nil:
			errs = append(errs, fmt.Errorf("tls-listen %q: %w", c.TLSListen, err))
		case c.TLSListen == c.Listen:
			errs = append(errs, fmt.Errorf("--tls-listen %q is --listen too; give another address, or drop --tls-listen to speak TLS on --listen", c.TLSListen))
		case c.Htpasswd == "" && !c.NoAuth && !certsRequired && !c.onlyLocalClients(host):
			errs = append(errs, fmt.Errorf("tls-listen %q %s and neither --htpasswd nor --tls-client-ca is set: refusing to run an open proxy; add one, or --no-auth", c.TLSListen, c.notLocalWhy()))
		}
	}
	if c.TLSClientCA != "" && !c.tlsOn() {
		errs = append(errs, errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates come in the TLS handshake"))
	}
	if c.TLSClientUser != "" {
		if _, err := tlsconf.ParseUserMode(c.TLSClientUser); err != nil {
			errs = append(errs, err)
		}
	}
	if c.PACProxy == "" && len(c.PACDirect) > 0 {
		errs = append(errs, errors.New("--pac-direct needs --pac-proxy (the host:port the PAC file names)"))
	}
	if c.PACProxy != "" {
		if _, err := c.pacFile(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// pacFile generates the PAC file of c; nil without PACProxy.
func (c Config) pacFile() (*pac.File, error) {
	if c.PACProxy == "" {
		return nil, nil
	}
	return pac.New(pac.Config{Proxy: c.PACProxy, TLS: c.tlsOn(), Direct: c.PACDirect})
}

// newTLSStore loads the certificate, key and client CAs; nil without TLS.
// A client certificate is required when it is the only authentication.
func newTLSStore(cfg Config, log *slog.Logger) (*tlsconf.Store, tlsconf.UserMode, error) {
	if !cfg.tlsOn() {
		return nil, 0, nil
	}
	mode := tlsconf.UserCN
	if cfg.TLSClientUser != "" {
		var err error
		if mode, err = tlsconf.ParseUserMode(cfg.TLSClientUser); err != nil {
			return nil, 0, err
		}
	}
	st, err := tlsconf.New(tlsconf.Options{
		CertFile:          cfg.TLSCert,
		KeyFile:           cfg.TLSKey,
		ClientCAFile:      cfg.TLSClientCA,
		RequireClientCert: cfg.TLSClientCA != "" && cfg.Htpasswd == "",
		Logger:            log,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("tls: %w", err)
	}
	return st, mode, nil
}

// ServeTLS accepts proxy connections on ln, speaking TLS on them, until
// Shutdown: it is Serve for the --tls-listen listener (Serve itself speaks
// TLS when TLS is on and no TLSListen is set). It needs TLSCert and
// TLSKey. ln is the raw listener: the TLS layer goes on top of it, so a
// listener that reads a PROXY protocol header must be the one passed in.
// Like Serve it always returns a non-nil error and closes ln.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.tls == nil {
		ln.Close()
		return errors.New("ServeTLS: TLS is not configured (TLSCert, TLSKey)")
	}
	return s.serve(ln, true)
}

// serve is Serve and ServeTLS: ln (wrapped in TLS if useTLS) is served
// until Shutdown.
func (s *Server) serve(ln net.Listener, useTLS bool) error {
	if err := s.addSelf(ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	// The cap and PROXY-protocol listener sits on the raw socket, under
	// TLS: a PROXY header comes before the TLS handshake, and a connection
	// counts from accept, not from a finished handshake. Every client
	// listener counts against the one s.caps.
	cfg := s.state.Load().cfg
	l := listen.New(ln, listen.Config{
		Caps:          s.caps,
		ProxyFrom:     cfg.ProxyProtocolFrom,
		HeaderTimeout: cfg.HeaderTimeout,
		OnRefuse:      s.connRefused,
	})
	u := s.caps.Usage()
	var srv net.Listener = l
	if useTLS {
		s.startTLS()
		// Not http.Server.ServeTLS: it would add h2 to ALPN.
		srv = tls.NewListener(l, s.tls.ServerConfig())
	}
	// test/clients/run reads addr and tls next to each other: keep them so.
	s.log.Info("listening", keyAddr, ln.Addr().String(), keyTLS, useTLS, keyMaxConns, u.MaxConns, keyMaxConnsPerIP, u.MaxConnsPerIP)
	s.mu.Lock()
	if s.draining || s.handover { // too late: stopAccepting has run or is running
		s.mu.Unlock()
		srv.Close()
		return http.ErrServerClosed
	}
	s.accepting = append(s.accepting, ln) // the raw socket: see stopAccepting
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()
	err := s.http.Serve(srv)
	s.mu.Lock()
	stopped := s.draining || s.handover
	s.mu.Unlock()
	if stopped {
		err = http.ErrServerClosed // stopAccepting closed ln
	}
	return err
}

// startTLS starts, once, the goroutine that re-reads the certificate files
// when they change. It ends with the base context, at Shutdown.
func (s *Server) startTLS() {
	s.tlsOnce.Do(func() {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.tls.Run(s.baseCtx)
		}()
	})
}

// certUser returns the user of the request's verified client certificate,
// if the request came over TLS with one.
func (s *Server) certUser(q *request) (string, bool) {
	if s.tls == nil || q.r.TLS == nil || q.st.cfg.TLSClientCA == "" {
		return "", false
	}
	user, err := tlsconf.UserFromState(q.r.TLS, s.userMode)
	if err != nil {
		if errors.Is(err, tlsconf.ErrNoUser) {
			s.log.LogAttrs(q.r.Context(), slog.LevelInfo, "client certificate ignored",
				slog.String(keyClient, q.client.String()), slog.String(keyErr, err.Error()))
		}
		return "", false
	}
	return user, true
}

// certsOnly reports whether a request must be authenticated by a client
// certificate: it came over TLS, client certificates are on and there is
// no Basic auth to fall back to.
func (s *Server) certsOnly(q *request) bool {
	return q.st.auth == nil && q.r.TLS != nil && q.st.cfg.TLSClientCA != ""
}

// servePAC answers GET and HEAD /proxy.pac when a PAC is configured and
// reports whether it did.
func (s *Server) servePAC(w http.ResponseWriter, r *http.Request, st *state) bool {
	if st.pac == nil || r.URL.Path != pacPath || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		// Not back to idle: the drain would wait for the conn.
		w.Header().Set("Connection", "close")
	}
	st.pac.ServeHTTP(w, r)
	s.log.LogAttrs(r.Context(), slog.LevelDebug, "pac served", slog.String(keyClient, r.RemoteAddr))
	return true
}
