package acl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// ErrBadTarget is wrapped by every error from ParseTarget and ParseURLTarget,
// so the proxy can answer 400 with errors.Is. The message says what is wrong
// with the input; it never repeats userinfo (which may hold a password).
var ErrBadTarget = errors.New("bad target")

// Target is a canonical destination, the only form the rest of the proxy
// handles: parse once, decide and dial on the same value.
//
// Host is either a host name, lowercase ASCII (IDNA names in punycode) with no
// trailing dot, whose last label is never numeric; or an IP literal in
// canonical form: dotted-decimal IPv4, or compressed IPv6 without brackets or
// zone. An IPv4-mapped IPv6 address is stored as the IPv4 address it maps.
type Target struct {
	Host string
	Port uint16
}

// String returns host:port, with brackets around an IPv6 host. For a Target
// from ParseTarget, ParseTarget(t.String()) returns t.
func (t Target) String() string {
	return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
}

// Addr returns the IP address when Host is an IP literal. The address is
// unmapped (an IPv4-mapped IPv6 address is returned as IPv4).
func (t Target) Addr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(t.Host)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// ParseTarget parses the authority of a CONNECT request (host:port) into a
// canonical Target. The port is required and must be decimal 1-65535 without
// leading zeros. Rejected, because a resolver or dialer downstream could read
// them differently from the ACL: userinfo, paths, queries, percent-encoding,
// IPv6 zones, empty or over-long labels, characters other than letters,
// digits, '-' and '_' (underscore only in all-ASCII names), and every
// non-canonical IPv4 form (2130706433, 0x7f000001, 0177.0.0.1, 127.1, ...),
// including any name whose last label is numeric.
func ParseTarget(authority string) (Target, error) {
	host, bracketed, port, hasPort, msg := splitAuthority(authority)
	if msg != "" {
		return Target{}, badTarget(authority, msg)
	}
	if !hasPort {
		return Target{}, badTarget(authority, "missing port; a CONNECT target is host:port, e.g. example.com:443")
	}
	return finishTarget(authority, host, bracketed, port, 0)
}

// ParseURLTarget returns the Target of an absolute-form request URL
// (GET http://host/...). The scheme must be http or ws (default port 80) or
// https or wss (default port 443); userinfo is rejected. The host follows the
// rules of ParseTarget; percent-escapes were already decoded by url.Parse, so
// the decoded host is what is checked and dialed.
func ParseURLTarget(u *url.URL) (Target, error) {
	if u == nil {
		return Target{}, fmt.Errorf("%w: no URL", ErrBadTarget)
	}
	scheme := strings.ToLower(u.Scheme)
	shown := scheme + "://" + u.Host
	var def uint16
	switch scheme {
	case "http", "ws":
		def = 80
	case "https", "wss":
		def = 443
	case "":
		return Target{}, badTarget(shown, "not an absolute URL; use http://, https://, ws:// or wss://")
	default:
		return Target{}, badTarget(shown, fmt.Sprintf("unsupported scheme %q; use http, https, ws or wss", scheme))
	}
	if u.User != nil {
		return Target{}, badTarget(shown, "userinfo (user@) is not allowed in the URL")
	}
	if u.Opaque != "" || u.Host == "" {
		return Target{}, badTarget(shown, "missing host")
	}
	host, bracketed, port, hasPort, msg := splitAuthority(u.Host)
	if msg != "" {
		return Target{}, badTarget(shown, msg)
	}
	if !hasPort || port == "" {
		// RFC 3986 3.2.3: an empty port means the scheme's default.
		port = ""
	}
	return finishTarget(shown, host, bracketed, port, def)
}

// finishTarget canonicalises host and parses port; an empty port takes def
// (0: none, an error).
func finishTarget(input, host string, bracketed bool, port string, def uint16) (Target, error) {
	var h string
	var herr *hostError
	if bracketed {
		h, herr = canonicalIPv6(host)
	} else {
		h, herr = canonicalHost(host)
	}
	if herr != nil {
		return Target{}, badTarget(input, herr.Error())
	}
	p := def
	if port != "" || def == 0 {
		var msg string
		if p, msg = parsePort(port); msg != "" {
			return Target{}, badTarget(input, msg)
		}
	}
	return Target{Host: h, Port: p}, nil
}

func badTarget(input, msg string) error {
	return fmt.Errorf("%w %q: %s", ErrBadTarget, redact(input), msg)
}

// Redact replaces anything in s that looks like userinfo ("user:pass@",
// in a URL or a bare authority) with "REDACTED", so that credentials a
// client put in a target never reach an error message or a log. It is the
// one redaction of the module: the proxy uses it for its log lines.
func Redact(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	start := strings.LastIndex(s[:at], "//")
	if start >= 0 {
		start += 2
	} else {
		start = strings.LastIndexAny(s[:at], " \"'") + 1
	}
	return s[:start] + "REDACTED" + s[at:]
}

// redact is Redact, shortened for an error message.
func redact(s string) string {
	s = Redact(s)
	const max = 128
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// maxAuthorityLen bounds the work spent on a target: a 253-byte name in
// Unicode, brackets and a port fit easily.
const maxAuthorityLen = 1024

// splitAuthority splits host[:port] or [ipv6][:port]. msg is non-empty when
// the authority is malformed.
func splitAuthority(s string) (host string, bracketed bool, port string, hasPort bool, msg string) {
	if s == "" {
		return "", false, "", false, "empty target"
	}
	if len(s) > maxAuthorityLen {
		return "", false, "", false, fmt.Sprintf("longer than %d bytes", maxAuthorityLen)
	}
	if strings.Contains(s, "@") {
		return "", false, "", false, "userinfo (user@) is not allowed"
	}
	if strings.ContainsAny(s, "/?#\\") {
		return "", false, "", false, "a path, query or fragment is not allowed; send only host:port"
	}
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", false, "", false, "missing ']' after IPv6 address"
		}
		host, rest := s[1:end], s[end+1:]
		switch {
		case rest == "":
			return host, true, "", false, ""
		case rest[0] != ':':
			return "", false, "", false, fmt.Sprintf("unexpected %q after ']'", rest)
		}
		return host, true, rest[1:], true, ""
	}
	if strings.ContainsAny(s, "[]") {
		return "", false, "", false, "misplaced '[' or ']'; only an IPv6 address goes in brackets, e.g. [2001:db8::1]:443"
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, false, "", false, ""
	case 1:
		i := strings.IndexByte(s, ':')
		return s[:i], false, s[i+1:], true, ""
	}
	return "", false, "", false, "an IPv6 address must be in brackets, e.g. [2001:db8::1]:443"
}

// parsePort parses a decimal port 1-65535 written without sign or leading
// zeros; msg says what is wrong otherwise.
func parsePort(s string) (uint16, string) {
	if s == "" {
		return 0, "empty port"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Sprintf("port %q is not a decimal number 1-65535", s)
		}
	}
	if len(s) > 1 && s[0] == '0' {
		if t := strings.TrimLeft(s, "0"); t != "" && len(t) <= 5 {
			return 0, fmt.Sprintf("port %q has a leading zero; write %s", s, t)
		}
		return 0, fmt.Sprintf("port %q is not a port 1-65535", s)
	}
	if len(s) > 5 {
		return 0, fmt.Sprintf("port %s is out of range 1-65535", s)
	}
	n, _ := strconv.Atoi(s) // at most 5 digits: cannot fail
	switch {
	case n == 0:
		return 0, "port 0 is not a destination port; ports are 1-65535"
	case n > 65535:
		return 0, fmt.Sprintf("port %d is out of range 1-65535", n)
	}
	return uint16(n), ""
}
