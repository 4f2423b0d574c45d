package acl

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// hostError says why a host is not acceptable. For a non-canonical IPv4 form
// legacy holds the address a permissive resolver (inet_aton) would read.
type hostError struct {
	msg    string
	legacy netip.Addr
}

func (e *hostError) Error() string {
	if e.legacy.IsValid() {
		return fmt.Sprintf("%s (a resolver may read it as %s)", e.msg, e.legacy)
	}
	return e.msg
}

func hostErrorf(format string, args ...any) *hostError {
	return &hostError{msg: fmt.Sprintf(format, args...)}
}

const (
	maxNameLen  = 253 // RFC 1035 2.3.4, without the root dot
	maxLabelLen = 63
)

// canonicalHost returns the canonical form of an unbracketed host: a
// dotted-decimal IPv4 address or a lowercase ASCII host name with no trailing
// dot (see Target).
func canonicalHost(h string) (string, *hostError) {
	if h == "" {
		return "", hostErrorf("empty host")
	}
	if !isASCII(h) {
		// Lookup is the strict UTS 46 profile of RFC 5891 section 5 (STD3
		// characters, hyphen and joiner checks, bidi rule). Its output still
		// goes through the ASCII checks below, so the result is stable:
		// parsing it again yields the same name.
		a, err := idna.Lookup.ToASCII(h)
		if err != nil {
			return "", hostErrorf("invalid internationalised host name: %v", err)
		}
		h = a
	}
	var b []byte // lowercase copy, made only when needed
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		case 'A' <= c && c <= 'Z':
			if b == nil {
				b = []byte(h)
			}
			b[i] = c + ('a' - 'A')
		case c == '%':
			return "", hostErrorf("percent-encoding is not allowed in a host")
		default:
			return "", hostErrorf("invalid character %q in host", c)
		}
	}
	if b != nil {
		h = string(b)
	}
	h = strings.TrimSuffix(h, ".") // one trailing dot: the root label
	if h == "" {
		return "", hostErrorf("empty host")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.String(), nil // only digits and dots get here: IPv4
	}
	if len(h) > maxNameLen {
		return "", hostErrorf("host name is longer than %d characters", maxNameLen)
	}
	last := ""
	for rest := h; ; {
		label, tail, more := strings.Cut(rest, ".")
		switch {
		case label == "":
			return "", hostErrorf("empty label in host name (\"..\" or a leading or extra trailing dot)")
		case len(label) > maxLabelLen:
			return "", hostErrorf("label %q is longer than %d characters", label, maxLabelLen)
		case strings.HasPrefix(label, "xn--"):
			// A punycode label must decode to a valid name and be the
			// encoding Lookup itself produces, or two spellings of one
			// name would reach different rules.
			if a, err := idna.Lookup.ToASCII(label); err != nil || a != label {
				return "", hostErrorf("label %q is not valid punycode", label)
			}
		}
		if !more {
			last = label
			break
		}
		rest = tail
	}
	if numericLabel(last) {
		if a, ok := legacyIPv4(h); ok {
			return "", &hostError{msg: "non-canonical IPv4 address; write it as four decimal numbers without leading zeros", legacy: a}
		}
		return "", hostErrorf("neither an IPv4 address nor a host name: a host name cannot end in a numeric label")
	}
	return h, nil
}

// canonicalIPv6 returns the canonical form of the text between brackets.
func canonicalIPv6(h string) (string, *hostError) {
	if strings.Contains(h, "%") {
		return "", hostErrorf("IPv6 zones are not allowed")
	}
	a, err := netip.ParseAddr(h)
	switch {
	case err != nil:
		return "", hostErrorf("invalid IPv6 address %q", h)
	case a.Is4():
		return "", hostErrorf("an IPv4 address is written without brackets: %s", a)
	}
	return a.Unmap().String(), nil
}

// numericLabel reports whether a label would make a WHATWG URL parser or
// inet_aton read the name as an IPv4 number: all decimal digits, or 0x
// followed by hex digits.
func numericLabel(l string) bool {
	if l == "" {
		return false
	}
	digits := l
	if strings.HasPrefix(l, "0x") {
		digits = l[2:]
		for i := 0; i < len(digits); i++ {
			if !isHex(digits[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// legacyIPv4 parses s the way inet_aton does (1 to 4 parts, each decimal,
// 0-prefixed octal or 0x-prefixed hex, the last part filling the remaining
// bytes), so error messages can say what a permissive resolver would reach.
func legacyIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, p := range parts {
		n, ok := legacyNumber(p)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 0xff {
				return netip.Addr{}, false
			}
			v |= n << (8 * (3 - i))
			continue
		}
		if n >= 1<<(8*(4-i)) {
			return netip.Addr{}, false
		}
		v |= n
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func legacyNumber(p string) (uint64, bool) {
	base := uint64(10)
	switch {
	case strings.HasPrefix(p, "0x"):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true
		}
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	case p == "":
		return 0, false
	}
	var n uint64
	for i := 0; i < len(p); i++ {
		var d uint64
		switch c := p[i]; {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		n = n*base + d
		if n > 0xffffffff {
			return 0, false
		}
	}
	return n, true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
