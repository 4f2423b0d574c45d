package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
)

// These tests check the README's Go client snippets for an https:// proxy
// against a listener built from ServerConfig, with a minimal CONNECT
// handler standing in for the proxy: it takes the user from a verified
// client certificate first, else from Basic credentials (the documented
// order), and relays bytes.

// miniProxy is the stand-in: CONNECT only, one Basic user bob:pw.
type miniProxy struct {
	wg sync.WaitGroup

	mu    sync.Mutex
	users []string // user of each accepted CONNECT
}

func (p *miniProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	user, err := UserFromState(r.TLS, UserCN)
	if err != nil {
		if r.Header.Get("Proxy-Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte("bob:pw")) {
			w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
			http.Error(w, "who are you", http.StatusProxyAuthRequired)
			return
		}
		user = "bob"
	}
	target, err := net.Dial("tcp", r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		target.Close()
		return
	}
	p.mu.Lock()
	p.users = append(p.users, user)
	p.mu.Unlock()
	io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n")
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		io.Copy(target, brw.Reader)
		target.Close()
		client.Close()
	}()
	go func() {
		defer p.wg.Done()
		io.Copy(client, target)
		target.Close()
		client.Close()
	}()
}

func (p *miniProxy) lastUser() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.users) == 0 {
		return ""
	}
	return p.users[len(p.users)-1]
}

type clientsWorld struct {
	proxy      *miniProxy
	proxyAddr  string // host:port of the TLS proxy listener
	proxyRoots *ca    // issues the proxy's certificate
	clientCAs  *ca    // issues client certificates
	target     string // wss:// URL of an echo server
	targetPool *x509.CertPool
	targetCA   []byte // PEM of targetPool's certificate
}

func newClientsWorld(t *testing.T) *clientsWorld {
	t.Helper()
	w := &clientsWorld{proxy: &miniProxy{}, proxyRoots: newCA(t, "proxy root"), clientCAs: newCA(t, "client CA")}
	s, err := New(writeFiles(t, w.proxyRoots.server(t, "proxy"), w.clientCAs.pem).options())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// tls.NewListener + Serve, not ServeTLS: ServeTLS would add h2 to
	// NextProtos unless Server.Protocols says HTTP/1 only.
	srv := &http.Server{Handler: w.proxy, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(tls.NewListener(ln, s.ServerConfig()))
	w.proxyAddr = ln.Addr().String()

	echo := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			io.WriteString(rw, "ok")
			return
		}
		c, err := (&websocket.Upgrader{}).Upgrade(rw, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		mt, msg, err := c.ReadMessage()
		if err == nil {
			c.WriteMessage(mt, msg)
		}
	}))
	w.target = "wss" + strings.TrimPrefix(echo.URL, "https")
	w.targetCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: echo.Certificate().Raw})
	w.targetPool = echo.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	t.Cleanup(func() {
		srv.Close()
		echo.Close()
		w.proxy.wg.Wait()
	})
	return w
}

func TestNetHTTPThroughHTTPSProxy(t *testing.T) {
	w := newClientsWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	echo := func(t *testing.T, hc *http.Client) {
		t.Helper()
		c, _, err := coder.Dial(ctx, w.target, &coder.DialOptions{HTTPClient: hc})
		if err != nil {
			t.Fatalf("dial through the proxy: %v", err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, coder.MessageText, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.Read(ctx); err != nil || string(got) != "hi" {
			t.Fatalf("echo = %q, %v; want hi", got, err)
		}
	}

	t.Run("Basic over TLS, one TLSClientConfig for both hops", func(t *testing.T) {
		// net/http uses TLSClientConfig for the proxy and, inside the
		// tunnel, for the target: its RootCAs must trust both.
		roots := w.targetPool.Clone()
		roots.AddCert(w.proxyRoots.cert)
		proxyURL, _ := url.Parse("https://bob:pw@" + w.proxyAddr)
		hc := &http.Client{Transport: &http.Transport{
			Proxy:           http.ProxyURL(proxyURL),
			TLSClientConfig: &tls.Config{RootCAs: roots},
		}}
		echo(t, hc)
		if got := w.proxy.lastUser(); got != "bob" {
			t.Errorf("proxy user = %q; want bob", got)
		}
	})

	t.Run("client certificate, DialTLSContext for the proxy hop", func(t *testing.T) {
		alice := w.clientCAs.client(t, "alice", nil, nil)
		proxyDialer := &tls.Dialer{Config: &tls.Config{
			RootCAs:      w.proxyRoots.pool(),
			Certificates: []tls.Certificate{alice.tls},
		}}
		proxyURL, _ := url.Parse("https://" + w.proxyAddr)
		hc := &http.Client{Transport: &http.Transport{
			Proxy:           http.ProxyURL(proxyURL),
			DialTLSContext:  proxyDialer.DialContext,            // TLS to the https:// proxy
			TLSClientConfig: &tls.Config{RootCAs: w.targetPool}, // TLS to the wss:// target
		}}
		echo(t, hc)
		if got := w.proxy.lastUser(); got != "alice" {
			t.Errorf("proxy user = %q; want alice (from the certificate)", got)
		}
	})
}

func TestGorillaThroughHTTPSProxy(t *testing.T) {
	w := newClientsWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("https:// proxy URL is refused by gorilla v1.5.3", func(t *testing.T) {
		proxyURL, _ := url.Parse("https://bob:pw@" + w.proxyAddr)
		d := websocket.Dialer{Proxy: http.ProxyURL(proxyURL)}
		_, _, err := d.DialContext(ctx, w.target, nil)
		if err == nil || !strings.Contains(err.Error(), "unknown scheme") {
			t.Skipf("gorilla now accepts https:// proxies (err = %v): update the README", err)
		}
	})

	t.Run("workaround: http:// proxy URL, TLS in NetDialContext", func(t *testing.T) {
		alice := w.clientCAs.client(t, "alice", nil, nil)
		proxyURL, _ := url.Parse("http://" + w.proxyAddr)
		proxyDialer := &tls.Dialer{Config: &tls.Config{
			RootCAs:      w.proxyRoots.pool(),
			Certificates: []tls.Certificate{alice.tls},
		}}
		d := websocket.Dialer{
			Proxy:           http.ProxyURL(proxyURL),
			NetDialContext:  proxyDialer.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: w.targetPool},
		}
		c, _, err := d.DialContext(ctx, w.target, nil)
		if err != nil {
			t.Fatalf("dial through the proxy: %v", err)
		}
		defer c.Close()
		if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.ReadMessage(); err != nil || string(got) != "hi" {
			t.Fatalf("echo = %q, %v; want hi", got, err)
		}
		if got := w.proxy.lastUser(); got != "alice" {
			t.Errorf("proxy user = %q; want alice", got)
		}
	})
}

// curl 7.52+ speaks TLS to an https:// proxy; --proxy-cacert trusts its
// certificate and --proxy-cert/--proxy-key present a client certificate.
func TestCurlThroughHTTPSProxy(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	w := newClientsWorld(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	alice := w.clientCAs.client(t, "alice", nil, nil)
	proxyCA := write("proxy-ca.pem", w.proxyRoots.pem)
	targetCA := write("target-ca.pem", w.targetCA)
	target := "https" + strings.TrimPrefix(w.target, "wss")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"Basic", []string{"--proxy", "https://bob:pw@" + w.proxyAddr}, "bob"},
		{"client certificate", []string{"--proxy", "https://" + w.proxyAddr,
			"--proxy-cert", write("alice.pem", alice.certPEM), "--proxy-key", write("alice-key.pem", alice.keyPEM)}, "alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			args := append([]string{"-sS", "-p", "--proxy-cacert", proxyCA, "--cacert", targetCA}, tc.args...)
			out, err := exec.CommandContext(ctx, curl, append(args, target)...).CombinedOutput()
			if err != nil || string(out) != "ok" {
				t.Fatalf("curl: %v: %s", err, out)
			}
			if got := w.proxy.lastUser(); got != tc.want {
				t.Errorf("proxy user = %q; want %q", got, tc.want)
			}
		})
	}
}
