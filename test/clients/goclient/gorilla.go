package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// runGorilla is the client as most Go services write it: the proxy comes
// from HTTP_PROXY/HTTPS_PROXY through http.ProxyFromEnvironment (gorilla
// asks it with an http:// URL for ws:// and an https:// URL for wss://,
// and always tunnels with CONNECT). ProxyFromEnvironment never proxies
// "localhost" or a loopback IP, whatever NO_PROXY says, so the runner
// gives this client a host name that resolves to 127.0.0.1.
func runGorilla(ctx context.Context, o options, r *report) {
	if o.mode == "env" {
		gorillaEnv(o, r)
		return
	}
	d := websocket.Dialer{
		Proxy:             http.ProxyFromEnvironment,
		HandshakeTimeout:  15 * time.Second,
		Subprotocols:      subprotocols("go-gorilla"),
		EnableCompression: true, // offers permessage-deflate: Sec-WebSocket-Extensions must pass too
	}
	if err := gorillaProxy(&d, o); err != nil {
		r.fail("connect", "%v", err)
		return
	}
	c, resp, err := d.DialContext(ctx, caseURL(o), handshakeHeader("go-gorilla", o.caseID))
	if o.mode == "fail" {
		if err == nil {
			c.Close()
			r.fail("dial-fails", "handshake succeeded; want a refusal")
			return
		}
		r.ok("dial-fails", "status=%s err=%q", statusOf(resp, err), oneLine(err.Error()))
		return
	}
	if err != nil {
		r.fail("connect", "dial: %v (status %s)", err, statusOf(resp, err))
		return
	}
	defer c.Close()
	if p := c.Subprotocol(); p != "wsegress-echo" {
		r.fail("connect", "subprotocol %q; want wsegress-echo", p)
		return
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
		_ = c.SetWriteDeadline(dl)
	}

	echo := func(typ int, data []byte) error {
		if err := c.WriteMessage(typ, data); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		gt, got, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if gt != typ || !bytes.Equal(got, data) {
			return fmt.Errorf("echo differs: type %d, %d bytes; want type %d, %d bytes", gt, len(got), typ, len(data))
		}
		return nil
	}

	text := "hello from go-gorilla " + o.caseID
	if err := echo(websocket.TextMessage, []byte(text)); err != nil {
		r.fail("text-echo", "%v", err)
		return
	}
	r.ok("text-echo", "%q", text)

	bin := payload1MiB(1)
	if err := echo(websocket.BinaryMessage, bin); err != nil {
		r.fail("binary-1mib", "%v", err)
		return
	}
	r.ok("binary-1mib", "%d bytes byte-exact", len(bin))

	// The pong handler runs inside ReadMessage, so keep echoing until the
	// pong has been read (it may come before or after an echo).
	pongs := make(chan string, 1)
	c.SetPongHandler(func(data string) error {
		select {
		case pongs <- data:
		default:
		}
		return nil
	})
	pingData := "ping-" + o.caseID
	if err := c.WriteControl(websocket.PingMessage, []byte(pingData), time.Now().Add(5*time.Second)); err != nil {
		r.fail("ping-pong", "write ping: %v", err)
		return
	}
	pong := ""
	for i := 0; i < 5 && pong == ""; i++ {
		if err := echo(websocket.TextMessage, []byte(fmt.Sprintf("after-ping %d", i))); err != nil {
			r.fail("ping-pong", "%v", err)
			return
		}
		select {
		case pong = <-pongs:
		default:
		}
	}
	if pong != pingData {
		r.fail("ping-pong", "pong payload %q; want %q", pong, pingData)
		return
	}
	r.ok("ping-pong", "pong %q", pong)

	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second)); err != nil {
		r.fail("close-1000", "write close: %v", err)
		return
	}
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		r.fail("close-1000", "after close: %v; want the server's close 1000", err)
		return
	}
	r.ok("close-1000", "client got close %d %q", ce.Code, ce.Text)
}

// gorillaProxy sets an explicit proxy (-proxy) and, with -proxy-tls, the
// README's workaround for an HTTPS proxy with gorilla v1.5.3, which knows
// only http:// proxy URLs: keep the http:// URL and make the connection
// to the proxy TLS in NetDialContext. Gorilla uses NetDialContext only to
// reach the proxy, then sends CONNECT and does the target's TLS itself.
func gorillaProxy(d *websocket.Dialer, o options) error {
	if o.proxy == "" {
		return nil
	}
	pu, err := url.Parse(o.proxy)
	if err != nil || pu.Host == "" {
		return errors.New("bad -proxy URL")
	}
	d.Proxy = http.ProxyURL(pu)
	if !o.proxyTLS {
		return nil
	}
	cfg := &tls.Config{} // nil RootCAs: the system pool, with SSL_CERT_FILE
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	d.NetDialContext = (&tls.Dialer{Config: cfg}).DialContext
	return nil
}

// gorillaEnv shows which targets http.ProxyFromEnvironment sends through
// the proxy: the documented quirk, checked against the Go in use.
func gorillaEnv(o options, r *report) {
	u, err := url.Parse(o.url)
	if err != nil {
		r.fail("env-skips-loopback", "parse %s: %v", o.url, err)
		return
	}
	port := u.Port()
	pick := func(host string) string {
		req := &http.Request{URL: &url.URL{Scheme: "http", Host: host + ":" + port}}
		p, err := http.ProxyFromEnvironment(req)
		switch {
		case err != nil:
			return "error " + err.Error()
		case p == nil:
			return "direct"
		default:
			return "proxy"
		}
	}
	got := map[string]string{}
	var parts []string
	for _, h := range []string{"localhost", "127.0.0.1", "[::1]", u.Hostname()} {
		got[h] = pick(h)
		parts = append(parts, h+"="+got[h])
	}
	detail := strings.Join(parts, " ")
	if got["localhost"] != "direct" || got["127.0.0.1"] != "direct" || got["[::1]"] != "direct" || got[u.Hostname()] != "proxy" {
		r.fail("env-skips-loopback", "with HTTP_PROXY set: %s; want loopback direct and %s via the proxy", detail, u.Hostname())
		return
	}
	r.ok("env-skips-loopback", "with HTTP_PROXY set: %s", detail)
}
