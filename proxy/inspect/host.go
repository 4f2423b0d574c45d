package inspect

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/wsegress/wsegress/acl"
)

// sameHost reports whether name (an SNI or the host part of a Host header)
// names t.Host: ASCII case-insensitive, one trailing dot ignored; an IP
// literal target matches the same address written in any form netip
// accepts, without a zone.
func sameHost(name string, t acl.Target) bool {
	name = strings.TrimSuffix(name, ".")
	if a, ok := t.Addr(); ok {
		b, err := netip.ParseAddr(name)
		return err == nil && b.Zone() == "" && b.Unmap() == a
	}
	return asciiEqualFold(name, t.Host)
}

// asciiEqualFold is strings.EqualFold for ASCII only: Unicode folding would
// let "\u212a" (Kelvin sign) match "k".
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hostNames reports whether a Host header value names t, and if not, why.
// The port may be left out when the CONNECT port is 80 or 443: the scheme
// (ws or wss) is not visible in the handshake, and a client whose TLS is
// done by something in front of it writes wss's default port the same way.
// The port cannot steer the connection anyway (the proxy dials t); the host
// is what fronting would abuse.
func hostNames(hostport string, t acl.Target) (bool, string) {
	host, port, hasPort := hostport, "", false
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return false, "missing ']'"
		}
		rest := host[end+1:]
		host = host[1:end]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return false, "only an IPv6 address goes in brackets"
		}
		if rest != "" {
			if rest[0] != ':' {
				return false, "unexpected text after ']'"
			}
			port, hasPort = rest[1:], true
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		if strings.Count(host, ":") > 1 {
			return false, "an IPv6 address must be in brackets"
		}
		host, port, hasPort = host[:i], host[i+1:], true
	}
	if host == "" {
		return false, "empty host"
	}
	if hasPort && port != "" { // "host:" is the host with the default port (RFC 3986 6.2.3)
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return false, "bad port"
		}
		if uint16(p) != t.Port {
			return false, "port " + port + " is not the CONNECT port " + strconv.Itoa(int(t.Port))
		}
	} else if t.Port != 80 && t.Port != 443 {
		return false, "no port, and the CONNECT port " + strconv.Itoa(int(t.Port)) + " is not a default (80 or 443)"
	}
	if !sameHost(host, t) {
		return false, "host is not the CONNECT host " + t.Host
	}
	return true, ""
}
