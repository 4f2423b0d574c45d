package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"

	xproxy "golang.org/x/net/proxy"

	"github.com/wsegress/wsegress/acl"
)

// dialer makes every outbound connection. Without an upstream it resolves
// the target itself, asks the policy about every address, and dials only
// addresses that passed: the name is never handed to a dialer that would
// resolve it again (DNS rebinding). With an upstream the parent resolves,
// so only host-name rules can be checked.
type dialer struct {
	net      *net.Dialer
	resolver Resolver
	upstream xproxy.ContextDialer // nil: direct
}

func newDialer(cfg Config) (*dialer, error) {
	d := &dialer{
		// Keep-alive off here: tunnels switch it on once they are old
		// enough to need it (armKeepAlive).
		net:      &net.Dialer{KeepAlive: -1},
		resolver: cfg.Resolver,
	}
	if d.resolver == nil {
		d.resolver = net.DefaultResolver
	}
	if cfg.Upstream != nil {
		up, err := newUpstream(cfg.Upstream, d.net)
		if err != nil {
			return nil, err
		}
		d.upstream = up
	}
	return d, nil
}

// dialResult is what dial learned besides the connection, for logs.
type dialResult struct {
	decision acl.Decision
	addr     string // the address dialed (IP:port, or the target via upstream)
}

// dial connects to t on behalf of who if the policy allows it. A refusal
// wraps errDenied; the decision explains it either way.
func (d *dialer) dial(ctx context.Context, pol *acl.Policy, t acl.Target, who acl.Subject) (net.Conn, dialResult, error) {
	if d.upstream != nil {
		dec := pol.DecideName(t, who)
		res := dialResult{decision: dec, addr: t.String()}
		if !dec.Allow {
			return nil, res, fmt.Errorf("%s: %w", t, errDenied)
		}
		c, err := d.upstream.DialContext(ctx, "tcp", t.String())
		if err != nil {
			return nil, res, fmt.Errorf("dial %s via upstream: %w", t, err)
		}
		return c, res, nil
	}

	addrs, err := d.resolve(ctx, t)
	if err != nil {
		return nil, dialResult{decision: acl.Decision{Rule: "-", Reason: "resolution failed"}}, err
	}
	var allowed []netip.Addr
	var decisions []acl.Decision // of allowed, by index: each address may pass by another rule
	var res, denied dialResult
	for _, ip := range addrs {
		dec := pol.Decide(t, ip, who)
		if !dec.Allow {
			if denied.decision.Rule == "" {
				denied.decision = dec
			}
			continue
		}
		allowed = append(allowed, ip)
		decisions = append(decisions, dec)
	}
	if len(allowed) == 0 {
		return nil, denied, fmt.Errorf("%s: %w", t, errDenied)
	}
	var firstErr error
	for i, ip := range allowed {
		res.decision = decisions[i]
		res.addr = netip.AddrPortFrom(ip, t.Port).String()
		c, err := d.dialOne(ctx, res.addr, len(allowed)-i)
		if err == nil {
			return c, res, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, res, fmt.Errorf("dial %s: %w", t, firstErr)
}

// dialOne dials addr with a fair share of what is left of ctx's deadline
// when more addresses remain to try, as net.Dialer does: one blackholed
// address (often an IPv6 one listed first) must not use up the whole
// dial timeout while another would answer.
func (d *dialer) dialOne(ctx context.Context, addr string, remaining int) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok && remaining > 1 {
		share := time.Until(dl) / time.Duration(remaining)
		if share < 2*time.Second {
			share = min(2*time.Second, time.Until(dl))
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, share)
		defer cancel()
	}
	return d.net.DialContext(ctx, "tcp", addr)
}

// resolve returns the addresses of t (the literal itself for an IP).
func (d *dialer) resolve(ctx context.Context, t acl.Target) ([]netip.Addr, error) {
	if ip, ok := t.Addr(); ok {
		return []netip.Addr{ip}, nil
	}
	addrs, err := d.resolver.LookupNetIP(ctx, "ip", t.Host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", t.Host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: %w", t.Host, &net.DNSError{Err: "no addresses", Name: t.Host, IsNotFound: true})
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	return addrs, nil
}

// newUpstream builds the parent-proxy dialer. SOCKS5 comes from
// golang.org/x/net/proxy; x/net has no HTTP CONNECT client, so that one
// is ours (httpConnectDialer).
func newUpstream(u *url.URL, forward *net.Dialer) (xproxy.ContextDialer, error) {
	switch u.Scheme {
	case "socks5", "socks5h":
		var a *xproxy.Auth
		if u.User != nil {
			p, _ := u.User.Password()
			a = &xproxy.Auth{User: u.User.Username(), Password: p}
		}
		return &socksDialer{parent: u, auth: a, forward: forward}, nil
	case "http":
		return &httpConnectDialer{parent: u, forward: forward}, nil
	default:
		return nil, fmt.Errorf("upstream %s: unsupported scheme %q", u.Redacted(), u.Scheme)
	}
}

// socksDialer tunnels through a SOCKS5 parent with x/net/proxy and
// returns the parent's raw TCP connection once the handshake is done.
// x/net wraps it in a type with neither CloseWrite nor SyscallConn, which
// would lose half-close and splicing; its handshake reads exact byte
// counts and buffers nothing, so the raw connection is safe to use.
type socksDialer struct {
	parent  *url.URL
	auth    *xproxy.Auth
	forward *net.Dialer
}

func (d *socksDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	rec := &recordingDialer{d: d.forward}
	sd, err := xproxy.SOCKS5("tcp", d.parent.Host, d.auth, rec)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", d.parent.Redacted(), err)
	}
	c, err := sd.(xproxy.ContextDialer).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if rec.conn == nil {
		return c, nil
	}
	return rec.conn, nil
}

// recordingDialer remembers the connection it made for one SOCKS dial.
type recordingDialer struct {
	d    *net.Dialer
	conn net.Conn
}

func (r *recordingDialer) Dial(network, addr string) (net.Conn, error) {
	return r.DialContext(context.Background(), network, addr)
}

func (r *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := r.d.DialContext(ctx, network, addr)
	r.conn = c
	return c, err
}
