package test

import (
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsegress/wsegress/proxy"
)

// TestUpstreamHTTP chains through a parent wsegress with CONNECT, with
// credentials in the upstream URL, and checks a WebSocket echo.
func TestUpstreamHTTP(t *testing.T) {
	parent := newWorld(t, nil)
	child := newWorld(t, func(c *proxy.Config) {
		c.Upstream = &url.URL{Scheme: "http", Host: parent.proxyURL.Host}
		c.ACL.Rules = append(c.ACL.Rules, allowRule(parent.ws.Listener.Addr()))
	})
	// With an upstream the child cannot resolve names, but IP-literal
	// targets are still checked, so it needs the parent's target allowed.
	wsEcho(t, child.wsDialer(child.proxyURL), wsURL(parent.ws, "ws"))
	eventually(t, 5*time.Second, "parent saw the tunnel", func() bool {
		return strings.Contains(parent.logs.String(), "status=200")
	})
}

// TestUpstreamSOCKS5 chains through a minimal SOCKS5 server.
func TestUpstreamSOCKS5(t *testing.T) {
	socks := socks5Server(t)
	w := newWorld(t, func(c *proxy.Config) {
		c.Upstream = &url.URL{Scheme: "socks5", Host: socks}
	})
	wsEcho(t, w.wsDialer(w.proxyURL), wsURL(w.ws, "ws"))
	wsEcho(t, w.wsDialer(w.proxyURL), wsURL(w.wss, "wss"))
}

// TestUpstreamSOCKS5HalfClose: through a SOCKS5 parent a client's
// half-close still reaches the target (x/net's SOCKS conn has no
// CloseWrite; the dialer hands the relay the raw connection).
func TestUpstreamSOCKS5HalfClose(t *testing.T) {
	socks := socks5Server(t)
	ln, conns := rawTarget(t)
	w := newWorld(t, func(c *proxy.Config) {
		c.Upstream = &url.URL{Scheme: "socks5", Host: socks}
		withAllow(ln.Addr())(c)
	})
	c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
	io.WriteString(c, "abc")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(tc)
	if err != nil || string(got) != "abc" {
		t.Fatalf("target read %q, %v; want \"abc\" then EOF", got, err)
	}
	io.WriteString(tc, "got:abc")
	tc.Close()
	reply, err := io.ReadAll(br)
	if err != nil || string(reply) != "got:abc" {
		t.Fatalf("client read %q, %v", reply, err)
	}
}

// TestIgnoresProxyEnvironment: wsegress never follows its own
// HTTPS_PROXY/HTTP_PROXY; only --upstream chains.
func TestIgnoresProxyEnvironment(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("ALL_PROXY", "socks5://127.0.0.1:1")
	w := newWorld(t, nil)
	wsEcho(t, w.wsDialer(w.proxyURL), wsURL(w.ws, "ws"))
	resp, body, _, _ := w.rawRequest("GET " + w.ws.URL + "/x HTTP/1.1\r\nHost: " + w.ws.Listener.Addr().String() + "\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("plain GET = %d %q; want 200 straight to the target", resp.StatusCode, body)
	}
}

// wsEcho dials url with d and checks one text echo and a clean close.
func wsEcho(t *testing.T, d *websocket.Dialer, u string) {
	t.Helper()
	c, resp, err := d.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", u, err, resp)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte("via upstream")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "via upstream" {
		t.Fatalf("echo = %q %v", msg, err)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
}

// socks5Server is a minimal RFC 1928 server (no auth, CONNECT only) on
// 127.0.0.1, enough to prove the upstream dialer speaks SOCKS5.
func socks5Server(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go socks5Serve(c)
		}
	}()
	return ln.Addr().String()
}

func socks5Serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	h := make([]byte, 2)
	if _, err := io.ReadFull(c, h); err != nil || h[0] != 5 {
		return
	}
	io.ReadFull(c, make([]byte, h[1]))
	c.Write([]byte{5, 0})
	req := make([]byte, 4)
	if _, err := io.ReadFull(c, req); err != nil || req[1] != 1 {
		return
	}
	var host string
	switch req[3] {
	case 1:
		ip := make([]byte, 4)
		io.ReadFull(c, ip)
		host = net.IP(ip).String()
	case 3:
		n := make([]byte, 1)
		io.ReadFull(c, n)
		name := make([]byte, n[0])
		io.ReadFull(c, name)
		host = string(name)
	case 4:
		ip := make([]byte, 16)
		io.ReadFull(c, ip)
		host = net.IP(ip).String()
	}
	p := make([]byte, 2)
	io.ReadFull(c, p)
	addr := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(p))))
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		c.Write([]byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}) // only loopback here
		return
	}
	tc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	defer tc.Close()
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	c.SetDeadline(time.Time{})
	go func() { io.Copy(tc, c); tc.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, tc)
}
