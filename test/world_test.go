package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsegress/wsegress/acl"
	"github.com/wsegress/wsegress/proxy"
)

// world is one test's set of real servers on 127.0.0.1: a WebSocket echo
// target (ws and wss), and the proxy under test.
type world struct {
	t        *testing.T
	proxy    *proxy.Server
	proxyURL *url.URL // http://127.0.0.1:port
	ws       *httptest.Server
	wss      *httptest.Server
	logs     *logBuffer
}

// newWorld starts echo targets and a proxy whose config is base plus rules
// allowing the targets. mutate, if non-nil, edits the config first.
func newWorld(t *testing.T, mutate func(*proxy.Config)) *world {
	t.Helper()
	w := &world{t: t, logs: &logBuffer{}}
	w.ws = httptest.NewServer(echoHandler())
	t.Cleanup(w.ws.Close)
	w.wss = httptest.NewTLSServer(echoHandler())
	t.Cleanup(w.wss.Close)

	cfg := proxy.Config{Listen: "127.0.0.1:0", HeaderTimeout: 2 * time.Second, DialTimeout: 2 * time.Second}
	cfg.ACL.Rules = append(cfg.ACL.Rules, allowRule(w.ws.Listener.Addr()), allowRule(w.wss.Listener.Addr()))
	if mutate != nil {
		mutate(&cfg)
	}
	w.startProxy(cfg)
	return w
}

// startProxy runs a proxy with cfg on a fresh 127.0.0.1 port.
func (w *world) startProxy(cfg proxy.Config) {
	t := w.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := proxy.New(cfg, log)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", w.logs)
		}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v; want http.ErrServerClosed", err)
		}
	})
	w.proxy = srv
	w.proxyURL = &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

func allowRule(a net.Addr) acl.RuleSpec {
	return acl.RuleSpec{Action: "allow", Target: a.String()}
}

// echoHandler echoes every WebSocket message (pings are answered by the
// library); a plain request gets a short text naming what arrived. It is
// built on coder/websocket, which keeps bytes a client pipelines behind
// its handshake (gorilla's server refuses them).
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			fmt.Fprintf(w, "plain %s %s proxy-auth=%q", r.Method, r.URL.Path, r.Header.Get("Proxy-Authorization"))
			return
		}
		c, err := cws.Accept(w, r, &cws.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(8 << 20)
		ctx := r.Context()
		for {
			mt, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, mt, msg); err != nil {
				return
			}
		}
	})
}

// wsDialer is a gorilla dialer through the proxy (gorilla uses CONNECT
// for ws:// and wss:// alike), trusting the wss target's certificate.
func (w *world) wsDialer(proxyURL *url.URL) *websocket.Dialer {
	pool := x509.NewCertPool()
	pool.AddCert(w.wss.Certificate())
	return &websocket.Dialer{
		Proxy:            http.ProxyURL(proxyURL),
		TLSClientConfig:  &tls.Config{RootCAs: pool},
		HandshakeTimeout: 5 * time.Second,
	}
}

func wsURL(s *httptest.Server, scheme string) string {
	return scheme + "://" + s.Listener.Addr().String() + "/echo"
}

// dialProxy opens a raw TCP connection to the proxy.
func (w *world) dialProxy() net.Conn {
	w.t.Helper()
	c, err := net.DialTimeout("tcp", w.proxyURL.Host, 5*time.Second)
	if err != nil {
		w.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	w.t.Cleanup(func() { c.Close() })
	return c
}

// rawRequest writes req on a fresh connection and reads one response.
func (w *world) rawRequest(req string) (*http.Response, string, net.Conn, *bufio.Reader) {
	w.t.Helper()
	c := w.dialProxy()
	if _, err := io.WriteString(c, req); err != nil {
		w.t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		w.t.Fatalf("read response to %q: %v", firstLine(req), err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), c, br
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	eventuallyErr(t, d, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("waiting for %s", what)
	})
}

// eventuallyErr polls cond until it returns nil, failing t with cond's
// last error once d has passed. It is the only polling loop of the tests.
func eventuallyErr(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fdCounts counts this process's open file descriptors: all of them, and
// the sockets and pipes among them. It skips t where /proc is missing.
func fdCounts(t *testing.T) (total, sockets, pipes int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case err != nil:
		case strings.HasPrefix(l, "socket:"):
			sockets++
		case strings.HasPrefix(l, "pipe:"):
			pipes++
		}
	}
	return len(ents), sockets, pipes
}

// checkNoLeaks records goroutines and fds now and, at cleanup, waits for
// both to come back to that level (pipes: within the relay's bounded cache
// of spare splice pipes, maxSparePipeFDs). Call it before newWorld, so that
// its check runs after the world's own cleanup.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	g0 := runtime.NumGoroutine()
	f0, _, p0 := fdCounts(t)
	t.Cleanup(func() {
		eventuallyErr(t, 10*time.Second, func() error {
			g := runtime.NumGoroutine()
			f, _, p := fdCounts(t)
			if g <= g0 && f-p <= f0-p0 && p <= p0+maxSparePipeFDs {
				return nil
			}
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("goroutines %d (before: %d), fds %d (before: %d); goroutines:\n%s", g, g0, f, f0, buf)
		})
	})
}

// logBuffer collects the proxy's log for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
