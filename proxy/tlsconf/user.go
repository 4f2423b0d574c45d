package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"unicode"
	"unicode/utf8"
)

// UserMode says which field of a verified client certificate names the
// user (--tls-client-user). The zero value is UserCN, the default.
type UserMode int

const (
	// UserCN takes the subject's Common Name.
	UserCN UserMode = iota
	// UserSANEmail takes the first rfc822Name (e-mail) SAN.
	UserSANEmail
	// UserSANURI takes the first URI SAN, in full (e.g.
	// spiffe://example.org/ns/chat/sa/bot).
	UserSANURI
)

// String returns the flag value for m.
func (m UserMode) String() string {
	switch m {
	case UserCN:
		return "cn"
	case UserSANEmail:
		return "san-email"
	case UserSANURI:
		return "san-uri"
	}
	return fmt.Sprintf("UserMode(%d)", int(m))
}

// ParseUserMode parses a --tls-client-user value: cn, san-email or san-uri.
func ParseUserMode(s string) (UserMode, error) {
	for _, m := range []UserMode{UserCN, UserSANEmail, UserSANURI} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("--tls-client-user %q: use cn, san-email or san-uri", s)
}

// maxUserLen bounds a user name taken from a certificate; it goes into
// logs and ACL lookups.
const maxUserLen = 256

var (
	// ErrNoCertificate: the connection has no verified client certificate
	// (none was sent, or it was not verified). The proxy then falls back
	// to Basic auth.
	ErrNoCertificate = errors.New("tls: no verified client certificate")
	// ErrNoUser: the certificate verified but has no usable name for the
	// configured UserMode (no CN, no e-mail or URI SAN, or a name with
	// control characters). The proxy treats it like no certificate and
	// logs the reason.
	ErrNoUser = errors.New("tls: client certificate names no user")
)

// UserFromCert returns the user name cert stands for under mode. It does
// not verify cert; use UserFromState for a connection. With several
// e-mail or URI SANs it takes the first, in the certificate's order; a CA
// that issues client certificates should put the user's name first.
// Errors wrap ErrNoUser.
func UserFromCert(cert *x509.Certificate, mode UserMode) (string, error) {
	if cert == nil {
		return "", ErrNoCertificate
	}
	var name string
	switch mode {
	case UserCN:
		if cert.Subject.CommonName == "" {
			return "", fmt.Errorf("%w: subject %q has no CN (--tls-client-user cn)", ErrNoUser, cert.Subject.String())
		}
		name = cert.Subject.CommonName
	case UserSANEmail:
		if len(cert.EmailAddresses) == 0 {
			return "", fmt.Errorf("%w: subject %q has no e-mail SAN (--tls-client-user san-email)", ErrNoUser, cert.Subject.String())
		}
		name = cert.EmailAddresses[0]
	case UserSANURI:
		if len(cert.URIs) == 0 {
			return "", fmt.Errorf("%w: subject %q has no URI SAN (--tls-client-user san-uri)", ErrNoUser, cert.Subject.String())
		}
		name = cert.URIs[0].String()
	default:
		return "", fmt.Errorf("%w: unknown mode %v", ErrNoUser, mode)
	}
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("%w: %v (--tls-client-user %v)", ErrNoUser, err, mode)
	}
	return name, nil
}

// checkName rejects names that would be unsafe in logs or ambiguous in
// ACLs. Errors show the name with %q, so nothing raw reaches a log.
func checkName(name string) error {
	if len(name) > maxUserLen {
		return fmt.Errorf("name longer than %d bytes", maxUserLen)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("name %q is not UTF-8", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("name %q has a control character", name)
		}
	}
	return nil
}

// UserFromState returns the user named by the verified client certificate
// of a completed handshake (http.Request.TLS on the proxy listener). Only
// a chain that crypto/tls verified against the client CAs counts
// (VerifiedChains); a peer certificate that was not verified gives
// ErrNoCertificate, never a user.
func UserFromState(cs *tls.ConnectionState, mode UserMode) (string, error) {
	if cs == nil || !cs.HandshakeComplete || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", ErrNoCertificate
	}
	return UserFromCert(cs.VerifiedChains[0][0], mode)
}

// UserFromConn is UserFromState for a connection: c must be a *tls.Conn
// (or wrap one and have a ConnectionState method) whose handshake is done;
// anything else gives ErrNoCertificate. It does not start a handshake.
func UserFromConn(c net.Conn, mode UserMode) (string, error) {
	sc, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return "", ErrNoCertificate
	}
	cs := sc.ConnectionState()
	return UserFromState(&cs, mode)
}
