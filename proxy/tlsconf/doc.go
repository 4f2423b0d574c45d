// Package tlsconf builds the TLS side of the proxy listener: a server
// certificate that is re-read when its files change or on Reload (renewal
// needs no restart), a *tls.Config with the proxy's protocol choices
// (TLS 1.2+, ALPN http/1.1 only, session tickets, optional client
// certificates), and the user name a verified client certificate stands for.
// It exists apart from package proxy so the TLS policy is one small,
// testable idea; the proxy only wraps its listener and asks for the user.
package tlsconf
