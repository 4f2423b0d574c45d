package tlsconf

import "crypto/tls"

// ServerConfig returns the *tls.Config for the proxy's TLS listener:
// http.Server.Serve(tls.NewListener(ln, s.ServerConfig())). Not ServeTLS:
// it adds "h2" to NextProtos unless http.Server.Protocols excludes
// HTTP/2 (with a client CA the handshake uses the snapshot's config and
// would not offer it, without one it would). The config has:
//
//   - TLS 1.2 or later;
//   - ALPN "http/1.1" only, never h2 (see New);
//   - session tickets on, so reconnecting clients resume;
//   - the certificate from GetCertificate, so reloads apply to the next
//     handshake without a restart;
//   - with a client CA file, the client certificate is verified against
//     the current CAs, through GetConfigForClient so a reloaded CA file
//     applies to the next handshake too; it is required only if
//     Options.RequireClientCert.
//
// The returned config is new on each call. Do not rely on changing it: with
// a client CA file the handshake runs on the snapshot's config instead.
func (s *Store) ServerConfig() *tls.Config {
	c := s.base.Clone()
	if s.opts.ClientCAFile != "" {
		// Set here too, so a caller inspecting the config sees the policy;
		// the handshake uses the snapshot's config with its ClientCAs.
		c.ClientAuth = s.clientAuth()
		c.GetConfigForClient = s.configForClient
	}
	return c
}

// configForClient returns the current snapshot's full config. The ticket
// keys still come from the listener's config (crypto/tls uses the original
// config's keys when the returned one sets none), so sessions resume across
// reloads; Go re-verifies a resumed client certificate against the current
// ClientCAs, so removing a CA also ends resumption with its certificates.
func (s *Store) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	return s.cur.Load().config, nil
}

func (s *Store) clientAuth() tls.ClientAuthType {
	if s.opts.RequireClientCert {
		return tls.RequireAndVerifyClientCert
	}
	// A certificate that is given must verify: a client with a bad
	// certificate fails the handshake rather than silently falling back
	// to Basic auth.
	return tls.VerifyClientCertIfGiven
}
