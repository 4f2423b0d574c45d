package test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsegress/wsegress/auth"
	"github.com/wsegress/wsegress/proxy"
)

// basic is a Proxy-Authorization header line for user and pass.
func basic(user, pass string) string {
	return "Proxy-Authorization: Basic " + b64(user+":"+pass)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// writeHtpasswd writes path with the real htpasswd tool (bcrypt, cost 4),
// from user, password pairs; the first creates the file.
func writeHtpasswd(t *testing.T, path string, pairs ...string) {
	t.Helper()
	bin, err := exec.LookPath("htpasswd")
	if err != nil {
		skipOrFail(t, "htpasswd (apache2-utils) not installed: %v", err)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		args := []string{"-B", "-C", "4", "-b"}
		if i == 0 {
			args = append(args, "-c")
		}
		out, err := exec.Command(bin, append(args, path, pairs[i], pairs[i+1])...).CombinedOutput()
		if err != nil {
			t.Fatalf("htpasswd %s %s: %v: %s", path, pairs[i], err, out)
		}
	}
}

// withUsers turns on authentication with these user, password pairs and
// the throttle off (tests that want it set it again).
func withUsers(t *testing.T, pairs ...string) func(*proxy.Config) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, path, pairs...)
	return func(c *proxy.Config) {
		c.Htpasswd = path
		c.Auth.Throttle.Disabled = true
	}
}

// chain applies several config edits in order.
func chain(fs ...func(*proxy.Config)) func(*proxy.Config) {
	return func(c *proxy.Config) {
		for _, f := range fs {
			f(c)
		}
	}
}

// TestAuthGoClients: Go clients with credentials in the proxy URL get
// through; with a wrong password they get 407.
func TestAuthGoClients(t *testing.T) {
	w := newWorld(t, withUsers(t, "alice", "s3cret-alice", "bob", "pw-bob"))
	good := &url.URL{Scheme: "http", User: url.UserPassword("alice", "s3cret-alice"), Host: w.proxyURL.Host}
	bad := &url.URL{Scheme: "http", User: url.UserPassword("alice", "wrong"), Host: w.proxyURL.Host}

	for scheme, srv := range map[string]*httptest.Server{"ws": w.ws, "wss": w.wss} {
		t.Run("gorilla "+scheme, func(t *testing.T) {
			c, _, err := w.wsDialer(good).Dial(wsURL(srv, scheme), nil)
			if err != nil {
				t.Fatalf("dial with credentials: %v", err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			c.WriteMessage(websocket.TextMessage, []byte("hi "+scheme))
			if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "hi "+scheme {
				t.Fatalf("echo = %q %v", msg, err)
			}
			if _, _, err := w.wsDialer(bad).Dial(wsURL(srv, scheme), nil); err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
				t.Fatalf("dial with a wrong password: err = %v; want Proxy Authentication Required", err)
			}
		})
	}
	t.Run("coder absolute form", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(good)}}
		c, _, err := cws.Dial(ctx, wsURL(w.ws, "ws"), &cws.DialOptions{HTTPClient: hc})
		if err != nil {
			t.Fatalf("coder dial with credentials: %v", err)
		}
		defer c.CloseNow()
		c.Write(ctx, cws.MessageText, []byte("abs"))
		if _, msg, err := c.Read(ctx); err != nil || string(msg) != "abs" {
			t.Fatalf("echo = %q %v", msg, err)
		}
	})
	t.Run("plain GET", func(t *testing.T) {
		for _, tc := range []struct {
			proxy *url.URL
			want  int
		}{{good, 200}, {bad, 407}} {
			hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(tc.proxy)}, Timeout: 10 * time.Second}
			resp, err := hc.Get(w.ws.URL + "/plain")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("GET via %s = %d %q; want %d", tc.proxy.Redacted(), resp.StatusCode, body, tc.want)
			}
			if tc.want == 200 && string(body) != `plain GET /plain proxy-auth=""` {
				t.Errorf("target saw %q; want no Proxy-Authorization", body)
			}
			if tc.want == 407 && resp.Header.Get("Proxy-Authenticate") != `Basic realm="wsegress"` {
				t.Errorf("Proxy-Authenticate = %q", resp.Header.Get("Proxy-Authenticate"))
			}
		}
	})
}

// TestAuthHeaders: every malformed or wrong credential is 407 (or 400),
// never a tunnel; the scheme name is case-insensitive.
func TestAuthHeaders(t *testing.T) {
	for _, realm := range []string{"", "egress test"} {
		t.Run("realm="+realm, func(t *testing.T) {
			w := newWorld(t, chain(withUsers(t, "alice", "s3cret-alice"), func(c *proxy.Config) { c.Realm = realm }))
			wantRealm := `Basic realm="` + cmpOr(realm, "wsegress") + `"`
			target := w.ws.Listener.Addr().String()
			cases := []struct {
				name   string
				header []string
				ok     bool
			}{
				{"no credentials", nil, false},
				{"wrong password", []string{basic("alice", "nope")}, false},
				{"unknown user", []string{basic("mallory", "s3cret-alice")}, false},
				{"empty password", []string{basic("alice", "")}, false},
				{"bad base64", []string{"Proxy-Authorization: Basic !!!not*base64"}, false},
				{"no colon", []string{"Proxy-Authorization: Basic " + b64("alices3cret-alice")}, false},
				{"bearer scheme", []string{"Proxy-Authorization: Bearer x"}, false},
				{"scheme only", []string{"Proxy-Authorization: Basic"}, false},
				{"no space", []string{"Proxy-Authorization: Basic" + b64("alice:s3cret-alice")}, false},
				{"oversized", []string{"Proxy-Authorization: Basic " + b64("alice:s3cret-alice"+strings.Repeat("x", 6000))}, false},
				{"two headers", []string{basic("alice", "s3cret-alice"), basic("alice", "s3cret-alice")}, false},
				{"lowercase basic", []string{"Proxy-Authorization: basic " + b64("alice:s3cret-alice")}, true},
				{"uppercase basic", []string{"Proxy-Authorization: BASIC " + b64("alice:s3cret-alice")}, true},
				{"unpadded", []string{"Proxy-Authorization: Basic " + strings.TrimRight(b64("alice:s3cret-alice"), "=")}, true},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					resp, body, err := w.client(t, "").connect(target, tc.header...)
					if err != nil {
						t.Fatal(err)
					}
					switch {
					case tc.ok && resp.StatusCode != 200:
						t.Fatalf("CONNECT = %d %q; want 200", resp.StatusCode, body)
					case !tc.ok && resp.StatusCode != 407 && resp.StatusCode != 400:
						t.Fatalf("CONNECT = %d %q; want 407 or 400", resp.StatusCode, body)
					case resp.StatusCode == 407 && resp.Header.Get("Proxy-Authenticate") != wantRealm:
						t.Errorf("Proxy-Authenticate = %q; want %q", resp.Header.Get("Proxy-Authenticate"), wantRealm)
					}
				})
			}
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestAuthRetrySameConnection: a 407 keeps the connection for a retry with
// credentials; after MaxAuthRetries 407s the proxy closes it.
func TestAuthRetrySameConnection(t *testing.T) {
	w := newWorld(t, withUsers(t, "alice", "s3cret-alice"))
	target := w.ws.Listener.Addr().String()
	p := w.client(t, "")
	resp, _, err := p.connect(target)
	if err != nil || resp.StatusCode != 407 || resp.Close {
		t.Fatalf("first CONNECT = %v %v; want 407 keeping the connection", resp, err)
	}
	if resp, body, err := p.connect(target, basic("alice", "s3cret-alice")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("retry with credentials on the same connection = %v %q %v; want 200", resp, body, err)
	}
	if err := p.wsEcho(target, "after retry"); err != nil {
		t.Fatal(err)
	}

	for _, retries := range []int{0, 2} {
		t.Run(fmt.Sprintf("MaxAuthRetries=%d", retries), func(t *testing.T) {
			w := newWorld(t, chain(withUsers(t, "alice", "s3cret-alice"), func(c *proxy.Config) { c.MaxAuthRetries = retries }))
			want := cmpInt(retries, 3)
			p := w.client(t, "")
			for i := 1; i <= want; i++ {
				resp, _, err := p.connect(target, basic("alice", fmt.Sprint("wrong", i)))
				if err != nil || resp.StatusCode != 407 {
					t.Fatalf("attempt %d = %v %v; want 407", i, resp, err)
				}
				if resp.Close != (i == want) {
					t.Fatalf("attempt %d: Connection: close = %v; want %v", i, resp.Close, i == want)
				}
			}
			p.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(p, "CONNECT "+target+" HTTP/1.1\r\n"+basic("alice", "s3cret-alice")+"\r\n\r\n")
			if n, err := p.br.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Fatalf("after %d failures the connection still answers (%d bytes, %v); want it closed", want, n, err)
			}
		})
	}
}

func cmpInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// TestAuthThrottle: failures from one address turn into 429 with
// Retry-After; another address that authenticated before is not slowed;
// the block ends on its own.
func TestAuthThrottle(t *testing.T) {
	const block = time.Second
	w := newWorld(t, chain(withUsers(t, "alice", "s3cret-alice", "bob", "pw-bob"), func(c *proxy.Config) {
		c.Auth.Throttle = auth.ThrottleConfig{MaxFailures: 3, Window: time.Minute, Block: block}
	}))
	target := w.ws.Listener.Addr().String()
	try := func(src, user, pass string) (*http.Response, string) {
		t.Helper()
		resp, body, err := w.client(t, src).connect(target, basic(user, pass))
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	if resp, body := try("127.0.0.2", "alice", "s3cret-alice"); resp.StatusCode != 200 {
		t.Fatalf("alice from 127.0.0.2 = %d %q; want 200", resp.StatusCode, body)
	}
	for i := 1; i <= 2; i++ {
		if resp, _ := try("127.0.0.1", "alice", fmt.Sprint("guess", i)); resp.StatusCode != 407 {
			t.Fatalf("failure %d = %d; want 407", i, resp.StatusCode)
		}
	}
	resp, _ := try("127.0.0.1", "alice", "guess3")
	blockedAt := time.Now()
	if resp.StatusCode != 429 {
		t.Fatalf("third failure = %d; want 429", resp.StatusCode)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Errorf("Retry-After = %q; want whole seconds covering the %v block", resp.Header.Get("Retry-After"), block)
	}
	inBlock := func(what string, got, want int) {
		t.Helper()
		switch {
		case got == want:
		case time.Since(blockedAt) < block:
			t.Errorf("%s within the block = %d; want %d", what, got, want)
		default:
			t.Logf("%s: inconclusive, the %v block was over before the answer came (%d)", what, block, got)
		}
	}
	r, _ := try("127.0.0.1", "alice", "s3cret-alice")
	inBlock("correct password from the blocked address", r.StatusCode, 429)
	r, _ = try("127.0.0.2", "alice", "s3cret-alice")
	inBlock("alice from her known address 127.0.0.2", r.StatusCode, 200)
	r, _ = try("127.0.0.2", "bob", "pw-bob")
	inBlock("bob from 127.0.0.2", r.StatusCode, 200)
	eventually(t, 10*block, "the block to end", func() bool {
		resp, _, err := w.client(t, "127.0.0.1").connect(target, basic("alice", "s3cret-alice"))
		return err == nil && resp.StatusCode == 200
	})
}

// TestAuthStaleClientSharedAddress is issue 11's office behind one NAT
// address, with the default throttle: a service with a stale password
// keeps getting 407, never 429, and a good client on the same address
// always gets its tunnel.
func TestAuthStaleClientSharedAddress(t *testing.T) {
	w := newWorld(t, chain(withUsers(t, "alice", "s3cret-alice", "bob", "pw-bob"), func(c *proxy.Config) {
		c.Auth.Throttle = auth.ThrottleConfig{} // on, defaults
	}))
	target := w.ws.Listener.Addr().String()
	for i := range 30 {
		resp, _, err := w.client(t, "127.0.0.1").connect(target, basic("bob", "stale-password"))
		if err != nil || resp.StatusCode != 407 {
			t.Fatalf("stale attempt #%d = %v, %v; want 407", i+1, resp, err)
		}
		resp, body, err := w.client(t, "127.0.0.1").connect(target, basic("alice", "s3cret-alice"))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("good client after stale attempt #%d = %v %q, %v; want 200", i+1, resp, body, err)
		}
	}
}

// TestAuthReloadKeepsThrottle: a reload that changes auth options keeps a
// running block and the trust of known clients.
func TestAuthReloadKeepsThrottle(t *testing.T) {
	var cfg proxy.Config
	w := newWorld(t, chain(withUsers(t, "alice", "s3cret-alice"), func(c *proxy.Config) {
		c.Auth.Throttle = auth.ThrottleConfig{MaxFailures: 3, Block: time.Hour}
		cfg = *c
	}))
	target := w.ws.Listener.Addr().String()
	try := func(src, user, pass string) int {
		t.Helper()
		resp, _, err := w.client(t, src).connect(target, basic(user, pass))
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if got := try("127.0.0.2", "alice", "s3cret-alice"); got != 200 {
		t.Fatalf("alice = %d; want 200", got)
	}
	for i := range 3 {
		try("127.0.0.3", "alice", fmt.Sprint("guess", i))
	}
	if got := try("127.0.0.3", "alice", "s3cret-alice"); got != 429 {
		t.Fatalf("alice from the guessing address = %d; want 429", got)
	}
	cfg.Auth.CacheTTL = time.Hour
	cfg.Auth.Groups = map[string][]string{"ops": {"alice"}}
	if err := w.proxy.Reload(cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := try("127.0.0.3", "alice", "s3cret-alice"); got != 429 {
		t.Errorf("after Reload, alice from the guessing address = %d; want 429 (block kept)", got)
	}
	if got := try("127.0.0.2", "alice", "s3cret-alice"); got != 200 {
		t.Errorf("after Reload, alice from her address = %d; want 200", got)
	}
}

// TestAuthReloadKeepsTunnel: removing a user and reloading keeps that
// user's open tunnel, and refuses the user's new ones.
func TestAuthReloadKeepsTunnel(t *testing.T) {
	var cfg proxy.Config
	w := newWorld(t, chain(withUsers(t, "alice", "s3cret-alice", "bob", "pw-bob"), func(c *proxy.Config) { cfg = *c }))
	target := w.ws.Listener.Addr().String()
	p := w.client(t, "")
	if resp, body, err := p.connect(target, basic("alice", "s3cret-alice")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT as alice = %v %q %v", resp, body, err)
	}
	if err := p.wsEcho(target, "before reload"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("htpasswd", "-D", cfg.Htpasswd, "alice").CombinedOutput(); err != nil {
		t.Fatalf("htpasswd -D: %v: %s", err, out)
	}
	if err := w.proxy.Reload(cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if err := p.echo("after reload"); err != nil {
		t.Fatalf("open tunnel after reload: %v", err)
	}
	if resp, _, err := w.client(t, "").connect(target, basic("alice", "s3cret-alice")); err != nil || resp.StatusCode != 407 {
		t.Fatalf("CONNECT as removed alice = %v %v; want 407", resp, err)
	}
	if resp, _, err := w.client(t, "").connect(target, basic("bob", "pw-bob")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT as bob = %v %v; want 200", resp, err)
	}
	eventually(t, 5*time.Second, "alice's and bob's tunnels open", func() bool { return w.proxy.OpenTunnels() == 2 })
}

// TestAuthSecretsStayPut: Proxy-Authorization never reaches a target and
// no password or credential appears in the proxy log; an ACL denial with
// valid credentials is 403, not 407.
func TestAuthSecretsStayPut(t *testing.T) {
	w := newWorld(t, withUsers(t, "alice", "s3cret-alice"))
	target := w.ws.Listener.Addr().String()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", User: url.UserPassword("alice", "s3cret-alice"), Host: w.proxyURL.Host}),
	}}
	resp, err := hc.Get(w.ws.URL + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `plain GET /plain proxy-auth=""` {
		t.Fatalf("plain GET = %d %q; want 200 with no Proxy-Authorization at the target", resp.StatusCode, body)
	}

	secrets := []string{"s3cret-alice", "wrong-pass-7", "typed-by-mallory", "pw-of-mallory", "colonless-secret"}
	attempts := [][]string{
		{basic("alice", "s3cret-alice")},
		{basic("alice", "wrong-pass-7")},
		{basic("typed-by-mallory", "pw-of-mallory")},
		{"Proxy-Authorization: Basic " + b64("colonless-secret")},
	}
	for _, h := range attempts {
		secrets = append(secrets, strings.TrimPrefix(h[0], "Proxy-Authorization: "), strings.TrimPrefix(h[0], "Proxy-Authorization: Basic "))
		if _, _, err := w.client(t, "").connect(target, h...); err != nil {
			t.Fatal(err)
		}
	}
	// A denial with valid credentials is 403 and asks for nothing.
	for _, req := range []string{
		"CONNECT 127.0.0.1:1 HTTP/1.1\r\n" + basic("alice", "s3cret-alice") + "\r\n\r\n",
		"GET http://127.0.0.1:1/x HTTP/1.1\r\nHost: 127.0.0.1:1\r\n" + basic("alice", "s3cret-alice") + "\r\n\r\n",
	} {
		resp, body, err := w.client(t, "").roundTrip(req, strings.Fields(req)[0])
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 403 || resp.Header.Get("Proxy-Authenticate") != "" {
			t.Errorf("%s with valid credentials = %d %q (Proxy-Authenticate %q); want 403 without a challenge",
				firstLine(req), resp.StatusCode, body, resp.Header.Get("Proxy-Authenticate"))
		}
	}
	eventually(t, 5*time.Second, "log lines of every attempt", func() bool {
		l := w.logs.String()
		return strings.Count(l, "status=407") >= 3 && strings.Count(l, "status=403") >= 2 &&
			strings.Contains(l, "user=alice") && strings.Contains(l, "user="+auth.UnknownUser)
	})
	logs := w.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("proxy log contains secret %q", s)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", logs)
	}
}
