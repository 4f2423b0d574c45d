package test

import (
	"bufio"
	"context"
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
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy"
)

var serial atomic.Int64

// testCA issues certificates for the proxy and its clients.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue returns a leaf as a tls.Certificate and its PEM files in dir.
func (ca *testCA) issue(t testing.TB, dir, name string, edit func(*x509.Certificate)) (tls.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certFile, keyFile
}

func serverCert(ip string) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		c.IPAddresses = []net.IP{net.ParseIP(ip)}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
}

func clientCert(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }

// tlsWorld is a world whose proxy speaks TLS on its listener.
type tlsWorld struct {
	*world
	ca     *testCA // issues the proxy's and the clients' certificates
	dir    string
	caFile string
}

// newTLSWorld starts a world with TLS on the proxy's listener; clientCA
// turns on client certificates from the same CA.
func newTLSWorld(t *testing.T, clientCA bool, mutate func(*proxy.Config)) *tlsWorld {
	t.Helper()
	tw := &tlsWorld{ca: newTestCA(t, "wsegress test CA"), dir: t.TempDir()}
	tw.caFile = filepath.Join(tw.dir, "ca.pem")
	if err := os.WriteFile(tw.caFile, tw.ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	_, cert, key := tw.ca.issue(t, tw.dir, "proxy", serverCert("127.0.0.1"))
	tw.world = newWorld(t, func(c *proxy.Config) {
		c.TLSCert, c.TLSKey = cert, key
		if clientCA {
			c.TLSClientCA = tw.caFile
		}
		if mutate != nil {
			mutate(c)
		}
	})
	tw.proxyURL.Scheme = "https"
	return tw
}

// roots trusts the proxy's CA and the wss target.
func (tw *tlsWorld) roots() *x509.CertPool {
	p := tw.ca.pool()
	p.AddCert(tw.wss.Certificate())
	return p
}

// gorillaDialer is the documented workaround for gorilla v1.5.3, which
// refuses https:// proxy URLs: an http:// proxy URL, and TLS to the proxy
// from NetDialContext.
func (tw *tlsWorld) gorillaDialer(user *url.Userinfo, certs ...tls.Certificate) *websocket.Dialer {
	pu := &url.URL{Scheme: "http", Host: tw.proxyURL.Host, User: user}
	pd := &tls.Dialer{Config: &tls.Config{RootCAs: tw.ca.pool(), Certificates: certs}}
	return &websocket.Dialer{
		Proxy:            http.ProxyURL(pu),
		NetDialContext:   pd.DialContext,
		TLSClientConfig:  &tls.Config{RootCAs: tw.roots()},
		HandshakeTimeout: 5 * time.Second,
	}
}

// coderClient is net/http with an https:// proxy URL.
func (tw *tlsWorld) coderClient(user *url.Userinfo) *http.Client {
	pu := &url.URL{Scheme: "https", Host: tw.proxyURL.Host, User: user}
	return &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(pu),
		TLSClientConfig: &tls.Config{RootCAs: tw.roots()},
	}}
}

func echoOnce(t *testing.T, c *websocket.Conn) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "hi" {
		t.Fatalf("echo: %q, %v", msg, err)
	}
}

// TestTLSProxyGoClients: gorilla and coder/websocket reach ws:// and wss://
// targets through a proxy that speaks TLS, with Basic auth inside it; a
// wrong password gets 407.
func TestTLSProxyGoClients(t *testing.T) {
	tw := newTLSWorld(t, false, withUsers(t, "alice", "pw"))
	ctx := t.Context()
	for _, scheme := range []string{"ws", "wss"} {
		target := tw.wss
		if scheme == "ws" {
			target = tw.ws
		}
		t.Run("gorilla "+scheme, func(t *testing.T) {
			c, _, err := tw.gorillaDialer(url.UserPassword("alice", "pw")).DialContext(ctx, wsURL(target, scheme), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			echoOnce(t, c)
			_, _, err = tw.gorillaDialer(url.UserPassword("alice", "bad")).DialContext(ctx, wsURL(target, scheme), nil)
			if err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
				t.Errorf("wrong password: %v; want Proxy Authentication Required", err)
			}
		})
		t.Run("coder "+scheme, func(t *testing.T) {
			c, _, err := cws.Dial(ctx, wsURL(target, scheme), &cws.DialOptions{HTTPClient: tw.coderClient(url.UserPassword("alice", "pw"))})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, cws.MessageText, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := c.Read(ctx); err != nil || string(msg) != "hi" {
				t.Fatalf("echo: %q, %v", msg, err)
			}
			c.Close(cws.StatusNormalClosure, "")
			_, resp, err := cws.Dial(ctx, wsURL(target, scheme), &cws.DialOptions{HTTPClient: tw.coderClient(url.UserPassword("alice", "bad"))})
			if err == nil || (resp == nil || resp.StatusCode != http.StatusProxyAuthRequired) && !strings.Contains(err.Error(), "Proxy Authentication Required") {
				t.Errorf("wrong password: %v; want 407", err)
			}
		})
	}
	eventually(t, 5*time.Second, "auth=basic in the log", func() bool {
		return strings.Contains(tw.logs.String(), "user=alice auth=basic")
	})
}

// TestTLSProxyProtocols: the listener offers http/1.1 only (never h2) and
// refuses TLS 1.1.
func TestTLSProxyProtocols(t *testing.T) {
	tw := newTLSWorld(t, false, nil)
	c, err := tls.Dial("tcp", tw.proxyURL.Host, &tls.Config{RootCAs: tw.ca.pool(), NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("ALPN %q; want http/1.1", p)
	}
	c.Close()
	_, err = tls.Dial("tcp", tw.proxyURL.Host, &tls.Config{RootCAs: tw.ca.pool(), MaxVersion: tls.VersionTLS11})
	if err == nil {
		t.Error("a TLS 1.1 handshake succeeded")
	}
}

// TestClientCertificateUser: with a client CA and no htpasswd a verified
// certificate is the user: ACL users: rules and the groups of the config
// apply to it, and the log says auth=cert. A certificate without a CN gets
// 407; no certificate fails the handshake.
func TestClientCertificateUser(t *testing.T) {
	tw := newTLSWorld(t, true, func(c *proxy.Config) {
		// Only alice, and members of "ops", may reach the ws target.
		ws := c.ACL.Rules[0].Target
		c.ACL.Rules = []acl.RuleSpec{
			{Action: "allow", Target: ws, Users: []string{"alice"}},
			{Action: "allow", Target: c.ACL.Rules[1].Target, Groups: []string{"ops"}},
		}
		c.Auth.Groups = map[string][]string{"ops": {"bob"}}
		c.Listen = "127.0.0.1:0"
	})
	alice, _, _ := tw.ca.issue(t, tw.dir, "alice", clientCert)
	bob, _, _ := tw.ca.issue(t, tw.dir, "bob", clientCert)
	noCN, _, _ := tw.ca.issue(t, tw.dir, "", clientCert)
	ctx := t.Context()

	c, _, err := tw.gorillaDialer(nil, alice).DialContext(ctx, wsURL(tw.ws, "ws"), nil)
	if err != nil {
		t.Fatalf("alice, ws: %v", err)
	}
	echoOnce(t, c)
	c.Close()
	if _, _, err := tw.gorillaDialer(nil, alice).DialContext(ctx, wsURL(tw.wss, "wss"), nil); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("alice, wss (group ops only): %v; want Forbidden", err)
	}
	c, _, err = tw.gorillaDialer(nil, bob).DialContext(ctx, wsURL(tw.wss, "wss"), nil)
	if err != nil {
		t.Fatalf("bob (group ops), wss: %v", err)
	}
	echoOnce(t, c)
	c.Close()
	// A password is not a way in when certificates are the only one.
	if _, _, err := tw.gorillaDialer(nil, noCN).DialContext(ctx, wsURL(tw.ws, "ws"), nil); err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Errorf("certificate without CN: %v; want Proxy Authentication Required", err)
	}
	if _, _, err := tw.gorillaDialer(url.UserPassword("alice", "x")).DialContext(ctx, wsURL(tw.ws, "ws"), nil); err == nil {
		t.Error("no client certificate: the dial succeeded; want a handshake failure")
	}
	eventually(t, 5*time.Second, "the cert users in the log", func() bool {
		l := tw.logs.String()
		return strings.Contains(l, "user=alice auth=cert") && strings.Contains(l, "user=bob auth=cert") &&
			strings.Contains(l, "client certificate ignored")
	})
}

// TestClientCertificateBeforeBasic: with both a client CA and htpasswd, a
// certificate is enough (Proxy-Authorization is then not checked), and a
// client without one uses Basic.
func TestClientCertificateBeforeBasic(t *testing.T) {
	tw := newTLSWorld(t, true, withUsers(t, "carol", "pw"))
	dave, _, _ := tw.ca.issue(t, tw.dir, "dave", clientCert)
	ctx := t.Context()
	c, _, err := tw.gorillaDialer(url.UserPassword("carol", "wrong"), dave).DialContext(ctx, wsURL(tw.wss, "wss"), nil)
	if err != nil {
		t.Fatalf("certificate with a wrong password: %v", err)
	}
	c.Close()
	c, _, err = tw.gorillaDialer(url.UserPassword("carol", "pw")).DialContext(ctx, wsURL(tw.wss, "wss"), nil)
	if err != nil {
		t.Fatalf("Basic without a certificate: %v", err)
	}
	c.Close()
	if _, _, err := tw.gorillaDialer(nil).DialContext(ctx, wsURL(tw.wss, "wss"), nil); err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Errorf("neither: %v; want Proxy Authentication Required", err)
	}
	eventually(t, 5*time.Second, "both ways in the log", func() bool {
		l := tw.logs.String()
		return strings.Contains(l, "user=dave auth=cert") && strings.Contains(l, "user=carol auth=basic")
	})
}

// TestTLSReloadCertificate: Reload (SIGHUP) serves a new certificate from
// the next handshake on.
func TestTLSReloadCertificate(t *testing.T) {
	var cfg proxy.Config
	tw := newTLSWorld(t, false, func(c *proxy.Config) { cfg = *c })
	first := peerSerial(t, tw)
	_, cert, key := tw.ca.issue(t, tw.dir, "proxy", serverCert("127.0.0.1"))
	if cert != cfg.TLSCert || key != cfg.TLSKey {
		t.Fatal("the new certificate went elsewhere")
	}
	if err := tw.proxy.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if second := peerSerial(t, tw); second == first {
		t.Errorf("serial %d after Reload; want the new certificate's", second)
	}
}

func peerSerial(t *testing.T, tw *tlsWorld) int64 {
	t.Helper()
	c, err := tls.Dial("tcp", tw.proxyURL.Host, &tls.Config{RootCAs: tw.ca.pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestPACEndpoint: GET /proxy.pac on the proxy listener (plain and TLS)
// and on the metrics listener; other origin-form requests keep their 400;
// a Reload rebuilds the file.
func TestPACEndpoint(t *testing.T) {
	var cfg proxy.Config
	w := newWorld(t, chain(withUsers(t, "alice", "pw"), func(c *proxy.Config) {
		c.PACProxy = "proxy.example.com:3128"
		c.PACDirect = []string{"*.corp.example", "10.0.0.0/8"}
		cfg = *c
	}))
	resp, body, _, _ := w.rawRequest("GET /proxy.pac HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" ||
		!strings.Contains(body, `"PROXY proxy.example.com:3128"`) || !strings.Contains(body, ".corp.example") {
		t.Fatalf("GET /proxy.pac: %d %q\n%s", resp.StatusCode, resp.Header, body)
	}
	etag := resp.Header.Get("ETag")
	resp, _, _, _ = w.rawRequest("GET /proxy.pac HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n")
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d; want 304", resp.StatusCode)
	}
	for _, req := range []string{"POST /proxy.pac HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "GET /other HTTP/1.1\r\nHost: x\r\n\r\n"} {
		if resp, _, _, _ := w.rawRequest(req); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d; want 400", firstLine(req), resp.StatusCode)
		}
	}

	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go w.proxy.ServeMetrics(ml)
	cfg.PACDirect = []string{"intranet.example"}
	if err := w.proxy.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	mresp, err := http.Get("http://" + ml.Addr().String() + "/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if mresp.StatusCode != 200 || mresp.Header.Get("ETag") == etag || !strings.Contains(string(mbody), "intranet.example") {
		t.Errorf("metrics /proxy.pac after Reload: %d etag %s\n%s", mresp.StatusCode, mresp.Header.Get("ETag"), mbody)
	}
}

// TestPACOverTLS: with TLS on, the PAC says HTTPS and is served on the
// TLS listener.
func TestPACOverTLS(t *testing.T) {
	tw := newTLSWorld(t, false, func(c *proxy.Config) { c.PACProxy = "127.0.0.1:3129" })
	c, err := tls.Dial("tcp", tw.proxyURL.Host, &tls.Config{RootCAs: tw.ca.pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /proxy.pac HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"HTTPS 127.0.0.1:3129"`) {
		t.Errorf("%d\n%s", resp.StatusCode, body)
	}
}

// TestTLSListenBesidePlain: ListenAndServe with --tls-listen serves plain
// on Listen and TLS on TLSListen.
func TestTLSListenBesidePlain(t *testing.T) {
	ca := newTestCA(t, "ca")
	dir := t.TempDir()
	_, cert, key := ca.issue(t, dir, "proxy", serverCert("127.0.0.1"))
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	plain, tlsAddr := free(), free()
	srv, err := proxy.New(proxy.Config{Listen: plain, TLSListen: tlsAddr, TLSCert: cert, TLSKey: key, PACProxy: "p.example:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	eventuallyErr(t, 5*time.Second, func() error {
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: ca.pool()})
		if err == nil {
			c.Close()
		}
		return err
	})
	resp, err := http.Get("http://" + plain + "/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("plain listener: %d", resp.StatusCode)
	}
}
