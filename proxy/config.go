package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/auth"
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
	// KeepAlive is the TCP keep-alive period on client and target sockets
	// (default 30s; negative disables).
	KeepAlive time.Duration

	// Upstream, if non-nil, is a parent proxy every target is dialed
	// through: socks5://[user:pass@]host:port or http://[user:pass@]host:port.
	// The parent resolves names, so only host-name ACL rules apply.
	Upstream *url.URL

	// ACL is the destination policy. Its zero value is the safe default:
	// ports 80 and 443 to public addresses.
	ACL acl.Config

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
	// QueueTimeout is how long a request waits for a free tunnel slot before
	// it is refused with 503 (0: no waiting).
	QueueTimeout time.Duration

	// MetricsListen, if set, serves /metrics, /healthz and /readyz there.
	MetricsListen string
	// ReadyWhenFull, if false (the default), /readyz fails while the global
	// tunnel pool is full, so a load balancer can steer clients elsewhere.
	ReadyWhenFull bool

	// Resolver, if non-nil, resolves target names (tests inject one). If
	// nil, net.DefaultResolver is used.
	Resolver Resolver
}

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
	if c.Realm == "" {
		c.Realm = "wsegress"
	}
	if c.MaxAuthRetries == 0 {
		c.MaxAuthRetries = 3
	}
	return c
}

// reloadInto returns old with the fields a Reload may change taken from c:
// users and groups with their options, realm, ACL and limits. The rest is
// fixed at New.
func (c Config) reloadInto(old Config) Config {
	old.Htpasswd, old.Groups, old.Auth, old.Realm, old.NoAuth = c.Htpasswd, c.Groups, c.Auth, c.Realm, c.NoAuth
	old.ACL, old.Limits, old.MaxPending = c.ACL, c.Limits, c.MaxPending
	return old
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	} else if c.Htpasswd == "" && !c.NoAuth && !isLoopbackHost(host) {
		errs = append(errs, fmt.Errorf("listen %q is not a loopback address and no --htpasswd is set: refusing to run an open proxy; add --htpasswd FILE or --no-auth", c.Listen))
	}
	if c.Htpasswd != "" && c.NoAuth {
		errs = append(errs, errors.New("--htpasswd and --no-auth contradict each other; pick one"))
	}
	if c.Groups != "" && c.Htpasswd == "" {
		errs = append(errs, errors.New("--groups needs --htpasswd: groups are of authenticated users"))
	}
	for name, d := range map[string]time.Duration{
		"dial-timeout": c.DialTimeout, "idle-timeout": c.IdleTimeout,
		"write-timeout":  c.WriteTimeout,
		"header-timeout": c.HeaderTimeout, "queue-timeout": c.QueueTimeout,
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
	if _, err := acl.Compile(c.ACL, acl.Options{}); err != nil {
		errs = append(errs, fmt.Errorf("acl: %w", err))
	}
	return errors.Join(errs...)
}

// isLoopbackHost reports whether a listen host only accepts local clients.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
