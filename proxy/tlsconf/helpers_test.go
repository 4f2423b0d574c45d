package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// ca is a test certificate authority generated at test time.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial struct {
	mu sync.Mutex
	n  int64
}

func nextSerial() *big.Int {
	serial.mu.Lock()
	defer serial.mu.Unlock()
	serial.n++
	return big.NewInt(serial.n)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t testing.TB, name string) *ca {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (c *ca) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// leaf is an issued certificate with its key, as PEM and as a tls.Certificate.
type leaf struct {
	certPEM, keyPEM []byte
	tls             tls.Certificate
}

// issue signs a leaf certificate; edit fills in names and usage.
func (c *ca) issue(t testing.TB, edit func(*x509.Certificate)) leaf {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	l := leaf{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
	if l.tls, err = tls.X509KeyPair(l.certPEM, l.keyPEM); err != nil {
		t.Fatal(err)
	}
	return l
}

func (c *ca) server(t testing.TB, cn string) leaf {
	return c.issue(t, func(x *x509.Certificate) {
		x.Subject.CommonName = cn
		x.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		x.DNSNames = []string{"proxy.test"}
		x.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
}

func (c *ca) client(t testing.TB, cn string, emails []string, uris []string) leaf {
	return c.issue(t, func(x *x509.Certificate) {
		x.Subject.CommonName = cn
		x.EmailAddresses = emails
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			x.URIs = append(x.URIs, u)
		}
		x.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	})
}

// replaceFile writes data beside name and renames it over name, as
// certbot and cert-manager do.
func replaceFile(t testing.TB, name string, data []byte) {
	t.Helper()
	tmp := name + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// files is a set of --tls-* files in a temporary directory.
type files struct{ cert, key, clientCA string }

func writeFiles(t testing.TB, l leaf, clientCA []byte) files {
	t.Helper()
	dir := t.TempDir()
	f := files{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem")}
	replaceFile(t, f.cert, l.certPEM)
	replaceFile(t, f.key, l.keyPEM)
	if clientCA != nil {
		f.clientCA = filepath.Join(dir, "client-ca.pem")
		replaceFile(t, f.clientCA, clientCA)
	}
	return f
}

func (f files) options() Options {
	return Options{CertFile: f.cert, KeyFile: f.key, ClientCAFile: f.clientCA}
}

// handshake is what the test server saw of one connection.
type handshake struct {
	err     error
	user    string
	userErr error
	resumed bool
}

// startServer accepts TLS connections on 127.0.0.1 with cfg. For each it
// completes the handshake, reads the certificate user under mode, writes
// one byte (so a TLS 1.3 client also reads its session tickets) and
// closes. Results arrive on the returned channel.
func startServer(t testing.TB, cfg *tls.Config, mode UserMode) (addr string, results <-chan handshake) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan handshake, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, cfg)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				var h handshake
				if h.err = tc.Handshake(); h.err == nil {
					h.user, h.userErr = UserFromConn(tc, mode)
					h.resumed = tc.ConnectionState().DidResume
					tc.Write([]byte{'x'})
				}
				select {
				case ch <- h:
				default:
					t.Error("test server: results channel full")
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), ch
}

// dial connects, reads the server's one byte and closes.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// A TLS 1.3 server verifies the client certificate after the client's
	// Handshake returned; a rejection shows on the first read.
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return c.ConnectionState(), err
	}
	return c.ConnectionState(), nil
}

func result(t testing.TB, results <-chan handshake) handshake {
	t.Helper()
	select {
	case h := <-results:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("no handshake result from the test server within 10s")
		return handshake{}
	}
}

// eventually waits up to d for cond, checking every few milliseconds.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
