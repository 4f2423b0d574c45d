package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/auth"
	"github.com/wsegress/wsegress/proxy/listen"
)

// Config is the proxy's settings: plain data, checked by Validate and
// turned into a running Server by New. The zero value of every field is
// documented; Defaults fills the ones that have a non-zero default.
type Config struct {
	// Listen is the TCP address the proxy listens on (default 127.0.0.1:3128).
	Listen string

	// DialTimeout bounds resolving and connecting to a target (default 10s).
	DialTimeout time.Duration
	// IdleTimeout ends a tunnel after no byte moved in either direction for
	// that long. Zero means never: WebSockets are long-lived.
	IdleTimeout time.Duration
	// WriteTimeout ends a tunnel whose destination accepted no byte for that
	// long while bytes were waiting for it (a peer that stopped reading),
	// with end reason write_timeout (default 15m, Squid's write_timeout).
	WriteTimeout time.Duration
	// HeaderTimeout bounds reading a request's headers, and a target's
	// response headers to a WebSocket upgrade (default 10s).
	HeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request's header size; larger ones get 431
	// (default 32 KiB).
	MaxHeaderBytes int
	// MaxTunnelLifetime, if positive, closes every tunnel after about that
	// long (±10% jitter, so the reconnects of tunnels opened together are
	// spread out), cleanly: FIN both ways, end reason "lifetime". It lets a
	// fleet rebalance and bounds a drain. Zero means no limit.
	MaxTunnelLifetime time.Duration
	// KeepAlive is the TCP keep-alive idle time on a tunnel's client and
	// target sockets (default 30s; negative disables), with Go's default
	// probe interval (15s) and count (9). It is switched on once the
	// tunnel has lived that long, so short tunnels never pay its
	// setsockopt calls; a connection that is not (yet) a tunnel is bounded
	// by the header, dial and idle timeouts instead. A listener passed to
	// Serve keeps its own per-accept settings: create it with
	// net.ListenConfig{KeepAlive: -1} to leave keep-alive to this field.
	KeepAlive time.Duration
	// BodyTimeout closes a plain-HTTP request whose body sends no byte for
	// that long (408 if no response has started; default 30s).
	BodyTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a target's response headers
	// to a forwarded plain-HTTP request, after the request is sent (504;
	// default 1m).
	ResponseHeaderTimeout time.Duration

	// Upstream, if non-nil, is a parent proxy every target is dialed
	// through: socks5://[user:pass@]host:port or http://[user:pass@]host:port.
	// The parent resolves names, so only host-name ACL rules apply.
	Upstream *url.URL

	// ACL is the destination policy. Its zero value is the safe default:
	// ports 80 and 443 to public addresses.
	ACL acl.Config
	// Inspect is what the proxy checks in a tunnel's first bytes. Its zero
	// value checks nothing (unless an ACL rule has websocket_only).
	Inspect Inspect

	// Htpasswd, if set, turns on Basic proxy authentication against that
	// htpasswd file; Groups optionally names a groups file.
	Htpasswd string
	Groups   string
	// Auth holds cache, throttle and plaintext settings for Htpasswd.
	Auth auth.Options
	// Realm is sent in Proxy-Authenticate (default "wsegress").
	Realm string
	// MaxAuthRetries is how many 407s one client connection gets before the
	// proxy closes it (default 3).
	MaxAuthRetries int
	// NoAuth must be set to listen on a non-loopback address without
	// authentication: an open proxy on a network is a liability.
	NoAuth bool

	// Limits bounds tunnels globally and per user, client IP and host.
	Limits Limits
	// MaxPending bounds requests between accept and the tunnel's 200 (0: no limit).
	MaxPending int
	// MaxConns caps the client connections open at once, counted from
	// accept (see package listen). 0: the default, listen.DefaultMaxConns
	// of Limits.Global; negative: no cap.
	MaxConns int
	// MaxConnsPerIP caps them per client: an IPv4 address or an IPv6 /64.
	// 0: the default, listen.DefaultMaxConnsPerIP of the MaxConns in force;
	// negative: no cap.
	MaxConnsPerIP int
	// ProxyProtocolFrom lists the balancers whose PROXY protocol header
	// (v1 or v2) is honoured, and required (see listen.Config.ProxyFrom).
	ProxyProtocolFrom []netip.Prefix
	// QueueTimeout is how long a request waits for a free tunnel slot before
	// it is refused with 503 (0: no waiting).
	QueueTimeout time.Duration

	// TLSCert and TLSKey, if set (both or neither), turn on TLS to the
	// proxy: PEM certificate chain and key, re-read when they change and on
	// Reload (package tlsconf). TLS is spoken on TLSListen when that is
	// set, else on Listen.
	TLSCert, TLSKey string
	// TLSListen, if set, is a second listener that speaks TLS, beside a
	// plain Listen.
	TLSListen string
	// TLSClientCA, if set, is a PEM bundle of the CAs that issue client
	// certificates: the TLS listener asks for one and verifies it, and a
	// verified certificate's user is authenticated (before Basic). Without
	// Htpasswd a certificate is required.
	TLSClientCA string
	// TLSClientUser says which field of a client certificate names the
	// user: "cn" (the default when empty), "san-email" or "san-uri".
	TLSClientUser string

	// PACProxy, if set, serves GET /proxy.pac on the proxy and metrics
	// listeners, pointing browsers at this host:port ("HTTPS host:port"
	// when TLS is on). PACDirect lists what the PAC sends DIRECT.
	PACProxy  string
	PACDirect []string

	// MetricsListen, if set, serves /metrics, /healthz and /readyz there.
	MetricsListen string
	// ReadyWhenFull, if false (the default), /readyz fails while the global
	// tunnel pool is full, so a load balancer can steer clients elsewhere.
	ReadyWhenFull bool

	// Resolver, if non-nil, resolves target names (tests inject one). If
	// nil, net.DefaultResolver is used.
	Resolver Resolver
}

// Inspect says what the proxy checks in the first bytes of a tunnel, after
// the 200 and before forwarding any of them (see package inspect), and of
// an absolute-form request.
type Inspect struct {
	// WebSocketOnly requires every CONNECT tunnel to start with a WebSocket
	// handshake or a TLS ClientHello naming its target, and every
	// absolute-form request to be a WebSocket upgrade naming it
	// (--websocket-only). An allow rule's websocket_only asks the same of
	// the tunnels it allows.
	WebSocketOnly bool
	// SNICheck requires a tunnel that starts with TLS to name its target in
	// the SNI; other tunnels pass (--sni-check). WebSocketOnly includes it.
	SNICheck bool
	// AllowMissingSNI passes a ClientHello without SNI, or with ECH and an
	// outer SNI that is not the target (--allow-missing-sni).
	AllowMissingSNI bool
	// Mode is "enforce" (empty means enforce) or "report" (--inspect-mode):
	// report logs and counts a tunnel the check would refuse as
	// would_deny, and lets it go on.
	Mode string
}

// The values of Inspect.Mode.
const (
	InspectEnforce = "enforce"
	InspectReport  = "report"
)

// Resolver looks up the addresses of a host name. *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Defaults returns c with every unset field that has a default filled in.
func (c Config) Defaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:3128"
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 15 * time.Minute
	}
	if c.HeaderTimeout == 0 {
		c.HeaderTimeout = 10 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 32 << 10
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = 30 * time.Second
	}
	if c.ResponseHeaderTimeout == 0 {
		c.ResponseHeaderTimeout = time.Minute
	}
	if c.Realm == "" {
		c.Realm = "wsegress"
	}
	if c.MaxAuthRetries == 0 {
		c.MaxAuthRetries = 3
	}
	return c
}

// reloadInto returns old with the fields a Reload may change taken from c:
// users and groups with their options, realm, ACL, first-bytes checks,
// limits and connection
// caps, the upstream, and the settings read per request (dial and body
// timeouts, auth retries, queue timeout, ready-when-full). The rest is
// fixed at New or Serve; see fixedChanges.
func (c Config) reloadInto(old Config) Config {
	old.Htpasswd, old.Groups, old.Auth, old.Realm, old.NoAuth = c.Htpasswd, c.Groups, c.Auth, c.Realm, c.NoAuth
	old.ACL, old.Inspect, old.Limits, old.MaxPending = c.ACL, c.Inspect, c.Limits, c.MaxPending
	old.PACProxy, old.PACDirect = c.PACProxy, c.PACDirect
	old.MaxConns, old.MaxConnsPerIP = c.MaxConns, c.MaxConnsPerIP
	old.MaxAuthRetries, old.QueueTimeout, old.Upstream = c.MaxAuthRetries, c.QueueTimeout, c.Upstream
	old.DialTimeout, old.BodyTimeout, old.ReadyWhenFull = c.DialTimeout, c.BodyTimeout, c.ReadyWhenFull
	return old
}

// fixedChanges names, by flag, the settings that differ between old and c
// but that a Reload cannot change: they are built into the listeners, the
// http.Server, the relay or the forwarding transport at New or Serve.
func (c Config) fixedChanges(old Config) []string {
	var names []string
	add := func(changed bool, flag string) {
		if changed {
			names = append(names, flag)
		}
	}
	add(c.Listen != old.Listen, "listen")
	add(c.MetricsListen != old.MetricsListen, "metrics-listen")
	add(!slices.Equal(c.ProxyProtocolFrom, old.ProxyProtocolFrom), "proxy-protocol-from")
	add(c.HeaderTimeout != old.HeaderTimeout, "header-timeout")
	add(c.IdleTimeout != old.IdleTimeout, "idle-timeout")
	add(c.ResponseHeaderTimeout != old.ResponseHeaderTimeout, "response-header-timeout")
	add(c.MaxHeaderBytes != old.MaxHeaderBytes, "max-header-bytes")
	add(c.KeepAlive != old.KeepAlive, "keep-alive")
	add(c.MaxTunnelLifetime != old.MaxTunnelLifetime, "max-tunnel-lifetime")
	add(c.WriteTimeout != old.WriteTimeout, "write-timeout")
	// The TLS files' contents are re-read on reload; their names are not.
	add(c.TLSListen != old.TLSListen, "tls-listen")
	add(c.TLSCert != old.TLSCert, "tls-cert")
	add(c.TLSKey != old.TLSKey, "tls-key")
	add(c.TLSClientCA != old.TLSClientCA, "tls-client-ca")
	add(c.TLSClientUser != old.TLSClientUser, "tls-client-user")
	return names
}

// sameUpstream reports whether a and b name the same parent proxy, with
// the same credentials.
func sameUpstream(a, b *url.URL) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.String() == b.String()
}

// ConnCaps resolves MaxConns and MaxConnsPerIP to the caps in force
// (0: no cap): the defaults derived from the open-file limit and
// Limits.Global where they are 0.
func (c Config) ConnCaps() (maxConns, perIP int) {
	switch {
	case c.MaxConns < 0:
		maxConns = 0
	case c.MaxConns == 0:
		maxConns = listen.DefaultMaxConns(c.Limits.Global)
	default:
		maxConns = c.MaxConns
	}
	switch {
	case c.MaxConnsPerIP < 0:
		perIP = 0
	case c.MaxConnsPerIP == 0:
		perIP = listen.DefaultMaxConnsPerIP(maxConns)
	default:
		perIP = c.MaxConnsPerIP
	}
	return maxConns, perIP
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	// A listener is open unless it has Basic auth, or it speaks TLS and
	// requires a client certificate.
	certsRequired := c.TLSClientCA != "" && c.Htpasswd == ""
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	} else if c.Htpasswd == "" && !c.NoAuth && !c.onlyLocalClients(host) && !(certsRequired && c.TLSListen == "") {
		errs = append(errs, fmt.Errorf("listen %q %s and no --htpasswd is set: refusing to run an open proxy; add --htpasswd FILE, --tls-client-ca FILE (TLS on --listen) or --no-auth", c.Listen, c.notLocalWhy()))
	}
	if c.Htpasswd != "" && c.NoAuth {
		errs = append(errs, errors.New("--htpasswd and --no-auth contradict each other; pick one"))
	}
	if c.Groups != "" && c.Htpasswd == "" && c.TLSClientCA == "" {
		errs = append(errs, errors.New("--groups needs --htpasswd or --tls-client-ca: groups are of authenticated users"))
	}
	errs = append(errs, c.validateTLS(certsRequired)...)
	for name, d := range map[string]time.Duration{
		"dial-timeout": c.DialTimeout, "idle-timeout": c.IdleTimeout,
		"write-timeout":  c.WriteTimeout,
		"header-timeout": c.HeaderTimeout, "queue-timeout": c.QueueTimeout,
		"body-timeout": c.BodyTimeout, "response-header-timeout": c.ResponseHeaderTimeout,
		"max-tunnel-lifetime": c.MaxTunnelLifetime,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("--%s %v: must not be negative", name, d))
		}
	}
	for name, n := range map[string]int{
		"max-tunnels": c.Limits.Global, "max-tunnels-per-user": c.Limits.PerUser,
		"max-tunnels-per-ip": c.Limits.PerIP, "max-tunnels-per-host": c.Limits.PerHost,
		"max-pending": c.MaxPending, "max-header-bytes": c.MaxHeaderBytes,
		"auth-max-concurrent": c.Auth.MaxConcurrent,
	} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("--%s %d: must not be negative", name, n))
		}
	}
	if strings.ContainsAny(c.Realm, "\"\\") || strings.IndexFunc(c.Realm, unicode.IsControl) >= 0 {
		errs = append(errs, fmt.Errorf("--realm %q: no quotes, backslashes or control characters (it goes inside a quoted header value)", c.Realm))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Upstream != nil {
		switch c.Upstream.Scheme {
		case "socks5", "socks5h", "http":
			if c.Upstream.Port() == "" {
				errs = append(errs, fmt.Errorf("upstream %s: a port is required", c.Upstream.Redacted()))
			}
		default:
			errs = append(errs, fmt.Errorf("upstream %s: scheme %q not supported; use socks5:// or http://", c.Upstream.Redacted(), c.Upstream.Scheme))
		}
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics-listen %q: %w", c.MetricsListen, err))
		}
	}
	switch c.Inspect.Mode {
	case "", InspectEnforce, InspectReport:
	default:
		errs = append(errs, fmt.Errorf(`--inspect-mode %q: write "enforce" or "report"`, c.Inspect.Mode))
	}
	if _, err := acl.Compile(c.ACL, acl.Options{}); err != nil {
		errs = append(errs, fmt.Errorf("acl: %w", err))
	}
	return errors.Join(errs...)
}

// onlyLocalClients reports whether a listener on host serves only clients
// of this machine: a loopback address, and no PROXY protocol. Behind a
// balancer that sends PROXY headers (even one on this host), the clients
// are the balancer's, from anywhere.
func (c Config) onlyLocalClients(host string) bool {
	return isLoopbackHost(host) && len(c.ProxyProtocolFrom) == 0
}

// notLocalWhy says why a listener is not onlyLocalClients, for errors.
func (c Config) notLocalWhy() string {
	if len(c.ProxyProtocolFrom) > 0 {
		return "takes PROXY protocol clients (--proxy-protocol-from), who come through a balancer from anywhere,"
	}
	return "is not a loopback address"
}

// isLoopbackHost reports whether a listen host only accepts local clients.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
