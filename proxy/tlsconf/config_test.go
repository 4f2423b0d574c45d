package tlsconf

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
)

func TestServerConfigVersions(t *testing.T) {
	root := newCA(t, "root")
	s, err := New(writeFiles(t, root.server(t, "server"), nil).options())
	if err != nil {
		t.Fatal(err)
	}
	addr, results := startServer(t, s.ServerConfig(), UserCN)
	for _, tc := range []struct {
		name   string
		max    uint16
		wantOK bool
	}{
		{"TLS 1.0", tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := dial(addr, &tls.Config{RootCAs: root.pool(), MinVersion: tls.VersionTLS10, MaxVersion: tc.max})
			h := result(t, results)
			if tc.wantOK {
				if err != nil || h.err != nil {
					t.Fatalf("handshake: client %v, server %v; want success", err, h.err)
				}
				if cs.Version != tc.max {
					t.Errorf("version = %x; want %x", cs.Version, tc.max)
				}
				return
			}
			if err == nil || h.err == nil {
				t.Fatalf("handshake: client %v, server %v; want both to fail", err, h.err)
			}
			if !strings.Contains(h.err.Error(), "version") {
				t.Errorf("server error = %v; want a protocol version error", h.err)
			}
		})
	}
}

// A client offering h2 gets http/1.1; a client offering only h2 gets
// no h2 either way.
func TestServerConfigALPN(t *testing.T) {
	root := newCA(t, "root")
	s, err := New(writeFiles(t, root.server(t, "server"), nil).options())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.ServerConfig().NextProtos; len(got) != 1 || got[0] != "http/1.1" {
		t.Fatalf("NextProtos = %q; want [http/1.1]", got)
	}
	addr, results := startServer(t, s.ServerConfig(), UserCN)

	cs, err := dial(addr, &tls.Config{RootCAs: root.pool(), NextProtos: []string{"h2", "http/1.1"}})
	if h := result(t, results); err != nil || h.err != nil {
		t.Fatalf("handshake: client %v, server %v", err, h.err)
	}
	if cs.NegotiatedProtocol != "http/1.1" {
		t.Errorf("negotiated %q offering h2,http/1.1; want http/1.1", cs.NegotiatedProtocol)
	}

	cs, err = dial(addr, &tls.Config{RootCAs: root.pool(), NextProtos: []string{"h2"}})
	result(t, results)
	if err == nil && cs.NegotiatedProtocol == "h2" {
		t.Errorf("negotiated h2 offering only h2; want a refusal")
	}
}

// clientCertWorld is a Store with client certificates from ca "clients"
// and a test server reading users under mode.
type clientCertWorld struct {
	root, clients *ca
	files         files
	store         *Store
	addr          string
	results       <-chan handshake
}

func newClientCertWorld(t *testing.T, mode UserMode, require bool) *clientCertWorld {
	t.Helper()
	w := &clientCertWorld{root: newCA(t, "server root"), clients: newCA(t, "client CA")}
	w.files = writeFiles(t, w.root.server(t, "server"), w.clients.pem)
	opts := w.files.options()
	opts.RequireClientCert = require
	var err error
	if w.store, err = New(opts); err != nil {
		t.Fatal(err)
	}
	w.addr, w.results = startServer(t, w.store.ServerConfig(), mode)
	return w
}

// dialAs connects with the given client certificate (nil for none) and
// returns the server's view.
func (w *clientCertWorld) dialAs(t *testing.T, cert *tls.Certificate, cfg *tls.Config) (clientErr error, h handshake) {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs = w.root.pool()
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	_, clientErr = dial(w.addr, cfg)
	return clientErr, result(t, w.results)
}

func TestClientCertUser(t *testing.T) {
	for _, tc := range []struct {
		mode UserMode
		want string
	}{
		{UserCN, "alice"},
		{UserSANEmail, "alice@example.com"},
		{UserSANURI, "spiffe://example.org/alice"},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			w := newClientCertWorld(t, tc.mode, false)
			alice := w.clients.client(t, "alice", []string{"alice@example.com", "second@example.com"}, []string{"spiffe://example.org/alice"})
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				err, h := w.dialAs(t, &alice.tls, &tls.Config{MaxVersion: v})
				if err != nil || h.err != nil {
					t.Fatalf("TLS %x handshake: client %v, server %v", v, err, h.err)
				}
				if h.user != tc.want || h.userErr != nil {
					t.Errorf("TLS %x user = %q, %v; want %q", v, h.user, h.userErr, tc.want)
				}
			}
		})
	}
}

func TestClientCertOptionalAndRequired(t *testing.T) {
	t.Run("optional: no certificate is not an error, and no user", func(t *testing.T) {
		w := newClientCertWorld(t, UserCN, false)
		if got := w.store.ServerConfig().ClientAuth; got != tls.VerifyClientCertIfGiven {
			t.Errorf("ClientAuth = %v; want VerifyClientCertIfGiven", got)
		}
		err, h := w.dialAs(t, nil, nil)
		if err != nil || h.err != nil {
			t.Fatalf("handshake without a certificate: client %v, server %v", err, h.err)
		}
		if h.user != "" || !errors.Is(h.userErr, ErrNoCertificate) {
			t.Errorf("user = %q, %v; want ErrNoCertificate", h.user, h.userErr)
		}
	})
	t.Run("required: no certificate fails the handshake", func(t *testing.T) {
		w := newClientCertWorld(t, UserCN, true)
		if got := w.store.ServerConfig().ClientAuth; got != tls.RequireAndVerifyClientCert {
			t.Errorf("ClientAuth = %v; want RequireAndVerifyClientCert", got)
		}
		err, h := w.dialAs(t, nil, nil)
		if err == nil || h.err == nil {
			t.Fatalf("handshake without a certificate: client %v, server %v; want both to fail", err, h.err)
		}
	})
	t.Run("a certificate without a CN verifies but names no user", func(t *testing.T) {
		w := newClientCertWorld(t, UserCN, false)
		anon := w.clients.client(t, "", []string{"anon@example.com"}, nil)
		err, h := w.dialAs(t, &anon.tls, nil)
		if err != nil || h.err != nil {
			t.Fatalf("handshake: client %v, server %v", err, h.err)
		}
		if h.user != "" || !errors.Is(h.userErr, ErrNoUser) {
			t.Errorf("user = %q, %v; want ErrNoUser", h.user, h.userErr)
		}
	})
}

// A certificate from another CA never yields a user: with the store's
// config the handshake fails; with a config that takes certificates
// without verifying them, UserFromConn still refuses.
func TestForeignClientCertHasNoUser(t *testing.T) {
	w := newClientCertWorld(t, UserCN, false)
	mallory := newCA(t, "client CA").client(t, "alice", nil, nil) // same names, other key
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		err, h := w.dialAs(t, &mallory.tls, &tls.Config{MaxVersion: v})
		if err == nil || h.err == nil {
			t.Errorf("TLS %x: foreign certificate: client %v, server %v; want both to fail", v, err, h.err)
		}
		if h.user != "" {
			t.Errorf("TLS %x: foreign certificate gave user %q", v, h.user)
		}
	}

	unverified := w.store.ServerConfig()
	unverified.GetConfigForClient = nil
	unverified.ClientAuth = tls.RequireAnyClientCert
	addr, results := startServer(t, unverified, UserCN)
	if _, err := dial(addr, &tls.Config{RootCAs: w.root.pool(), Certificates: []tls.Certificate{mallory.tls}}); err != nil {
		t.Fatalf("dial: %v", err)
	}
	h := result(t, results)
	if h.err != nil {
		t.Fatalf("server handshake: %v", h.err)
	}
	if h.user != "" || !errors.Is(h.userErr, ErrNoCertificate) {
		t.Errorf("unverified peer certificate: user = %q, %v; want ErrNoCertificate", h.user, h.userErr)
	}
}

// Replacing the client CA file applies to the next handshake.
func TestClientCAReload(t *testing.T) {
	w := newClientCertWorld(t, UserCN, false)
	alice := w.clients.client(t, "alice", nil, nil)
	newCAs := newCA(t, "client CA 2")
	bob := newCAs.client(t, "bob", nil, nil)

	// A Go client sends no certificate whose issuer the server did not
	// list as acceptable, so the handshake may succeed: with no user.
	if _, h := w.dialAs(t, &bob.tls, nil); h.user != "" {
		t.Fatalf("bob before the CA change: user %q; want none", h.user)
	}
	replaceFile(t, w.files.clientCA, newCAs.pem)
	if reloaded, err := w.store.Poll(); !reloaded || err != nil {
		t.Fatalf("Poll() = %v, %v; want true, nil", reloaded, err)
	}
	if err, h := w.dialAs(t, &bob.tls, nil); err != nil || h.user != "bob" {
		t.Fatalf("bob after the CA change: client %v, server %v, user %q; want bob", err, h.err, h.user)
	}
	if _, h := w.dialAs(t, &alice.tls, nil); h.user != "" {
		t.Fatalf("alice after her CA was removed: user %q; want none", h.user)
	}

	replaceFile(t, w.files.clientCA, []byte("not a certificate"))
	if _, err := w.store.Poll(); err == nil {
		t.Fatal("Poll() with a bad CA file = nil; want an error")
	}
	if err, h := w.dialAs(t, &bob.tls, nil); err != nil || h.user != "bob" {
		t.Fatalf("bob after a bad CA file: client %v, user %q; want the previous CAs kept", err, h.user)
	}
}

func TestSessionResumption(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			w := newClientCertWorld(t, UserCN, false)
			alice := w.clients.client(t, "alice", nil, nil)
			cfg := &tls.Config{MaxVersion: v, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			want := []bool{false, true, true}
			for i, wantResumed := range want {
				cs, err := dial(w.addr, &tls.Config{
					RootCAs: w.root.pool(), Certificates: []tls.Certificate{alice.tls},
					MaxVersion: v, ClientSessionCache: cfg.ClientSessionCache,
				})
				h := result(t, w.results)
				if err != nil || h.err != nil {
					t.Fatalf("connection %d: client %v, server %v", i, err, h.err)
				}
				if cs.DidResume != wantResumed || h.resumed != wantResumed {
					t.Errorf("connection %d: DidResume client %v server %v; want %v", i, cs.DidResume, h.resumed, wantResumed)
				}
				if h.user != "alice" {
					t.Errorf("connection %d: user = %q, %v; want alice (resumed sessions keep the verified chain)", i, h.user, h.userErr)
				}
				if i == 1 {
					// A reload in between keeps the ticket keys: the third
					// connection resumes too.
					if err := w.store.Reload(); err != nil {
						t.Fatal(err)
					}
				}
			}

			// Removing alice's CA ends her resumption: the ticket is
			// refused and the full handshake fails.
			replaceFile(t, w.files.clientCA, newCA(t, "other").pem)
			if err := w.store.Reload(); err != nil {
				t.Fatal(err)
			}
			cs, err := dial(w.addr, &tls.Config{
				RootCAs: w.root.pool(), Certificates: []tls.Certificate{alice.tls},
				MaxVersion: v, ClientSessionCache: cfg.ClientSessionCache,
			})
			h := result(t, w.results)
			if h.user != "" || (err == nil && cs.DidResume) {
				t.Errorf("after CA removal: user %q, resumed %v, client err %v; want no user", h.user, cs.DidResume, err)
			}
		})
	}
}
