package auth

import (
	"encoding/base64"
	"errors"
	"strings"
)

// MaxHeaderLen bounds the Proxy-Authorization value ParseBasic accepts. Real
// credentials are far shorter; the bound keeps a hostile client from making
// us decode, and later hash, kilobytes per request.
const MaxHeaderLen = 4096

// maxUserLen bounds user names written by SetPassword, like htpasswd(1).
const maxUserLen = 255

// ParseBasic parses a Proxy-Authorization value of the Basic scheme
// (RFC 7617) the way net/http's parseBasicAuth does, with three deliberate
// differences: the scheme may be followed by several spaces or tabs
// (RFC 7235 allows 1*SP), surrounding spaces and tabs are ignored, and the
// base64 may omit its '=' padding (some hand-written clients strip it; the
// credentials are unambiguous either way). The decoded value is split at its
// first colon, so a password may contain colons and a user name cannot.
//
// ok is false for anything else: another scheme, a value longer than
// MaxHeaderLen, characters outside the base64 alphabet (the decoder would
// otherwise skip CR and LF), bad base64, no colon, an empty user name, or a
// user name with control characters (RFC 7617 forbids them, and the cache
// key relies on the user name holding no NUL). An empty password parses;
// Check refuses it.
func ParseBasic(header string) (user, pass string, ok bool) {
	if len(header) > MaxHeaderLen {
		return "", "", false
	}
	h := strings.Trim(header, " \t")
	const scheme = "basic"
	if len(h) <= len(scheme) || !asciiEqualFold(h[:len(scheme)], scheme) {
		return "", "", false
	}
	rest := h[len(scheme):]
	cred := strings.TrimLeft(rest, " \t")
	if len(cred) == len(rest) || cred == "" {
		return "", "", false // "Basicxyz" or no credentials at all
	}
	raw, err := decodeBase64(cred)
	if err != nil {
		return "", "", false
	}
	user, pass, found := strings.Cut(string(raw), ":")
	if !found || !validUser(user) {
		return "", "", false
	}
	return user, pass, true
}

var errBase64 = errors.New("invalid base64")

// decodeBase64 decodes padded or unpadded standard base64, rejecting any byte
// outside the alphabet first because the stdlib decoder silently skips CR/LF.
func decodeBase64(s string) ([]byte, error) {
	data := strings.TrimRight(s, "=")
	if len(s)-len(data) > 2 {
		return nil, errBase64
	}
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return nil, errBase64
		}
	}
	if len(data) == len(s) && len(s)%4 != 0 {
		return base64.RawStdEncoding.DecodeString(s)
	}
	return base64.StdEncoding.DecodeString(s)
}

// asciiEqualFold is strings.EqualFold restricted to ASCII: Unicode folding
// would let "ſ" (U+017F) or "K" (U+212A) stand in for a scheme letter.
func asciiEqualFold(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// validUser reports whether name is non-empty and free of control characters
// (which also rules out NUL, the cache key's separator).
func validUser(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// CheckUserName reports why name cannot be stored in an htpasswd file, or nil.
// Besides what ParseBasic rejects it refuses ':' (the field separator),
// leading '#' (a comment line), leading or trailing blanks (the loader trims
// lines) and names over 255 bytes, as htpasswd(1) does. The CLI can call it
// before prompting for a password.
func CheckUserName(name string) error {
	switch {
	case !validUser(name):
		return errors.New("user name must be non-empty and free of control characters")
	case strings.Contains(name, ":"):
		return errors.New("user name must not contain ':'")
	case name[0] == '#':
		return errors.New("user name must not start with '#'")
	case strings.Trim(name, " ") != name:
		return errors.New("user name must not start or end with a space")
	case len(name) > maxUserLen:
		return errors.New("user name longer than 255 bytes")
	}
	return nil
}
