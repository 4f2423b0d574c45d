package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// pingMeText asks the target to ping the client itself: browsers do not
// expose ping/pong to scripts, but they must answer a server's ping.
const pingMeText = "wsegress:ping-me"

// maxMessage bounds one echoed message; the matrix sends 1 MiB.
const maxMessage = 4 << 20

// sessionTimeout bounds one WebSocket session on the target.
const sessionTimeout = 2 * time.Minute

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dir := fs.String("dir", "", "record directory (required)")
	wsAddr := fs.String("ws", "127.0.0.1:0", "ws:// listen address")
	wssAddr := fs.String("wss", "127.0.0.1:0", "wss:// listen address")
	deniedAddr := fs.String("denied", "127.0.0.2:0", "listen address of the target the ACL denies")
	certFile := fs.String("cert", "", "server certificate chain (PEM) for wss://")
	keyFile := fs.String("key", "", "server key (PEM) for wss://")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *certFile == "" || *keyFile == "" {
		return errors.New("serve: -dir, -cert and -key are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("load certificate %s: %w", *certFile, err)
	}
	rec := &recorder{dir: *dir}
	logger := log.New(os.Stderr, "echoserver: ", log.LstdFlags|log.Lmicroseconds)

	wsLn, err := net.Listen("tcp", *wsAddr)
	if err != nil {
		return fmt.Errorf("listen ws: %w", err)
	}
	wssTCP, err := net.Listen("tcp", *wssAddr)
	if err != nil {
		return fmt.Errorf("listen wss: %w", err)
	}
	deniedLn, deniedLoop, err := listenDenied(*deniedAddr)
	if err != nil {
		return err
	}
	// The recording wrapper sits above TLS so that it sees the plaintext
	// handshake; ALPN offers only http/1.1 because WebSocket over h2 is not
	// what the matrix tests.
	wssLn := tls.NewListener(wssTCP, &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	})

	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) { serveEcho(w, r, rec, logger) })
	mux.HandleFunc("/prime", servePrime)
	mux.HandleFunc("/", servePage)
	newServer := func() *http.Server {
		return &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          logger,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, recConnKey{}, c)
			},
		}
	}
	wsSrv, wssSrv := newServer(), newServer()

	errc := make(chan error, 4)
	go func() { errc <- wsSrv.Serve(&recListener{Listener: wsLn}) }()
	go func() { errc <- wssSrv.Serve(&recListener{Listener: wssLn}) }()
	go func() { errc <- serveDenied(deniedLn, rec, logger) }()
	go func() { errc <- serveDenied(deniedLoop, rec, logger) }()

	ready := fmt.Sprintf("ws=%s\nwss=%s\ndenied=%s\ndenied_loopback=%s\n", wsLn.Addr(), wssTCP.Addr(), deniedLn.Addr(), deniedLoop.Addr())
	if err := rec.writeAtomic("ready", []byte(ready)); err != nil {
		return err
	}
	logger.Printf("ready %s", strings.ReplaceAll(strings.TrimSpace(ready), "\n", " "))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		logger.Printf("%v: shutting down", s)
	case err := <-errc:
		logger.Printf("server stopped: %v", err)
	}
	_ = wsSrv.Close()
	_ = wssSrv.Close()
	_ = deniedLn.Close()
	_ = deniedLoop.Close()
	return nil
}

// listenDenied listens on addr and on 127.0.0.1 with the same port. The
// second listener is the denied target for clients that only reach the
// proxy through a host name for 127.0.0.1 (Go's ProxyFromEnvironment
// never proxies an IP literal such as 127.0.0.2).
func listenDenied(addr string) (net.Listener, net.Listener, error) {
	var lastErr error
	for range 20 {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen denied target: %w", err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		loop, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
		if err == nil {
			return ln, loop, nil
		}
		lastErr = err
		_ = ln.Close()
	}
	return nil, nil, fmt.Errorf("listen denied target on 127.0.0.1 with a matching port: %w", lastErr)
}

// servePrime answers the request Chromium makes through the proxy before
// it opens a WebSocket: that request is what puts the proxy credentials
// into Chromium's auth cache.
func servePrime(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.WriteHeader(http.StatusNoContent)
}

// servePage serves a page at the target's origin, for manual checks with a
// browser; the matrix's Chromium gets its page from Playwright.
func servePage(w http.ResponseWriter, r *http.Request) {
	// Every connection carries one request, so the recorded first request
	// of a connection is the WebSocket handshake when there is one.
	w.Header().Set("Connection", "close")
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, "<!doctype html><title>wsegress matrix</title><p>wsegress client matrix target</p>\n")
}

func serveEcho(w http.ResponseWriter, r *http.Request, rec *recorder, logger *log.Logger) {
	w.Header().Set("Connection", "close")
	id := caseID(r.URL.Query().Get("case"))
	if rc, ok := r.Context().Value(recConnKey{}).(*recConn); ok {
		if err := rec.writeAtomic("hs-"+id+".raw", rc.head()); err != nil {
			logger.Printf("case %s: %v", id, err)
		}
	}
	// curl sends its frames as a request body right behind the handshake;
	// full duplex stops net/http from discarding that "body" when the 101 is
	// written.
	_ = http.NewResponseController(w).EnableFullDuplex()
	var pings atomic.Int64
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:       []string{"wsegress-echo"},
		InsecureSkipVerify: true, // any Origin: the matrix checks that Origin arrives intact, not its value
		OnPingReceived: func(_ context.Context, payload []byte) bool {
			pings.Add(1)
			rec.appendLine("ping-"+id, fmt.Sprintf("%q", payload))
			return true
		},
	})
	if err != nil {
		logger.Printf("case %s: accept: %v", id, err)
		rec.appendLine("close-"+id, "accept-failed "+err.Error())
		return
	}
	c.SetReadLimit(maxMessage)
	ctx, cancel := context.WithTimeout(r.Context(), sessionTimeout)
	defer cancel()

	var pingers sync.WaitGroup
	defer pingers.Wait()
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			code := websocket.CloseStatus(err)
			if code != -1 {
				var ce websocket.CloseError
				errors.As(err, &ce)
				rec.appendLine("close-"+id, fmt.Sprintf("%d %s", int(code), ce.Reason))
			} else {
				rec.appendLine("close-"+id, "-1 "+err.Error())
				c.CloseNow()
			}
			logger.Printf("case %s: session ended: %v (pings received: %d)", id, err, pings.Load())
			return
		}
		rec.appendLine("msgs-"+id, fmt.Sprintf("%s %d", typ, len(data)))
		if typ == websocket.MessageText && string(data) == pingMeText {
			pingers.Add(1)
			go func() {
				defer pingers.Done()
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				defer pcancel()
				if err := c.Ping(pctx); err != nil {
					rec.appendLine("pong-"+id, "fail "+err.Error())
					return
				}
				rec.appendLine("pong-"+id, "ok")
			}()
		}
		if err := c.Write(ctx, typ, data); err != nil {
			logger.Printf("case %s: write: %v", id, err)
			c.CloseNow()
			return
		}
	}
}

// serveDenied accepts on the address the proxy must never reach and records
// every connection, so the runner can assert that none arrived.
func serveDenied(ln net.Listener, rec *recorder, logger *log.Logger) error {
	var n atomic.Int64
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("denied listener: %w", err)
		}
		i := n.Add(1)
		logger.Printf("denied target: unexpected connection from %s", c.RemoteAddr())
		rec.appendLine(fmt.Sprintf("denied-%d", i), c.RemoteAddr().String())
		_ = c.Close()
	}
}

var caseIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// caseID keeps record file names safe whatever a client puts in the URL.
func caseID(s string) string {
	if caseIDRe.MatchString(s) {
		return s
	}
	return "invalid"
}

// recorder writes the target's observations as files in dir.
type recorder struct {
	dir string
	mu  sync.Mutex // serialises appendLine
}

func (r *recorder) writeAtomic(name string, b []byte) error {
	p := filepath.Join(r.dir, name)
	if err := os.WriteFile(p+".tmp", b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("rename %s: %w", p, err)
	}
	return nil
}

func (r *recorder) appendLine(name, line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(r.dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		log.Printf("record %s: %v", name, err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

// recConnKey is the context key under which ConnContext stores the
// connection, so a handler can fetch the raw bytes of its request.
type recConnKey struct{}

// maxHead bounds what a recConn keeps: a handshake is a few hundred bytes.
const maxHead = 64 << 10

// recListener wraps accepted connections in recConn.
type recListener struct{ net.Listener }

func (l *recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recConn{Conn: c}, nil
}

// recConn keeps a copy of the first bytes read from the connection, which
// hold the request head exactly as the peer sent it.
type recConn struct {
	net.Conn
	mu  sync.Mutex // guards buf
	buf []byte
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if room := maxHead - len(c.buf); room > 0 {
			c.buf = append(c.buf, p[:min(n, room)]...)
		}
		c.mu.Unlock()
	}
	return n, err
}

// head returns the first request head read on the connection, through the
// blank line that ends it.
func (c *recConn) head() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := bytes.Index(c.buf, []byte("\r\n\r\n")); i >= 0 {
		return bytes.Clone(c.buf[:i+4])
	}
	return bytes.Clone(c.buf)
}
