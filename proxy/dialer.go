package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"

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
		net:      &net.Dialer{KeepAlive: cfg.KeepAlive},
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
// wraps ErrDenied; the decision explains it either way.
func (d *dialer) dial(ctx context.Context, pol *acl.Policy, t acl.Target, who acl.Subject) (net.Conn, dialResult, error) {
	if d.upstream != nil {
		dec := pol.DecideName(t, who)
		res := dialResult{decision: dec, addr: t.String()}
		if !dec.Allow {
			return nil, res, fmt.Errorf("%s: %w", t, ErrDenied)
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
	var res, denied dialResult
	for _, ip := range addrs {
		dec := pol.Decide(t, ip, who)
		switch {
		case !dec.Allow:
			if denied.decision.Rule == "" {
				denied.decision = dec
			}
		case len(allowed) == 0:
			res.decision = dec
			fallthrough
		default:
			allowed = append(allowed, ip)
		}
	}
	if len(allowed) == 0 {
		return nil, denied, fmt.Errorf("%s: %w", t, ErrDenied)
	}
	var firstErr error
	for _, ip := range allowed {
		res.addr = netip.AddrPortFrom(ip, t.Port).String()
		c, err := d.net.DialContext(ctx, "tcp", res.addr)
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
		d, err := xproxy.SOCKS5("tcp", u.Host, a, forward)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", u.Redacted(), err)
		}
		cd, ok := d.(xproxy.ContextDialer)
		if !ok {
			return nil, fmt.Errorf("upstream %s: dialer has no context support", u.Redacted())
		}
		return cd, nil
	case "http":
		return &httpConnectDialer{parent: u, forward: forward}, nil
	default:
		return nil, fmt.Errorf("upstream %s: unsupported scheme %q", u.Redacted(), u.Scheme)
	}
}

var errUpstreamRefused = errors.New("upstream proxy refused CONNECT")
