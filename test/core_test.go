package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/wsegress/wsegress/proxy"
)

// TestWebSocketEcho opens ws:// and wss:// through CONNECT with gorilla
// and checks text, a 1 MiB binary message, ping/pong and a clean close.
func TestWebSocketEcho(t *testing.T) {
	checkNoLeaks(t)
	w := newWorld(t, nil)
	for _, tc := range []struct {
		name, url string
	}{
		{"ws", wsURL(w.ws, "ws")},
		{"wss", wsURL(w.wss, "wss")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := w.wsDialer(w.proxyURL).Dial(tc.url, nil)
			if err != nil {
				t.Fatalf("dial %s through proxy: %v (resp %v)", tc.url, err, resp)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			if mt, msg, err := c.ReadMessage(); err != nil || mt != websocket.TextMessage || string(msg) != "hello" {
				t.Fatalf("echo = %d %q %v; want text \"hello\"", mt, msg, err)
			}
			big := make([]byte, 1<<20)
			rand.Read(big)
			if err := c.WriteMessage(websocket.BinaryMessage, big); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := c.ReadMessage(); err != nil || !bytes.Equal(msg, big) {
				t.Fatalf("1 MiB echo: equal=%v err=%v", bytes.Equal(msg, big), err)
			}
			pong := make(chan string, 1)
			c.SetPongHandler(func(s string) error { pong <- s; return nil })
			if err := c.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			// The pong arrives while reading; the next echo flushes it.
			c.WriteMessage(websocket.TextMessage, []byte("after-ping"))
			if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "after-ping" {
				t.Fatalf("echo after ping = %q %v", msg, err)
			}
			select {
			case s := <-pong:
				if s != "p1" {
					t.Errorf("pong = %q; want p1", s)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no pong")
			}
			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
			_, _, err = c.ReadMessage()
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("close: %v; want close 1000", err)
			}
		})
	}
}

// TestCoderWebSocketAbsoluteForm uses coder/websocket with an http.Client
// whose transport has a Proxy: for ws:// it sends an absolute-form GET
// (no CONNECT), which the proxy must forward and then relay.
func TestCoderWebSocketAbsoluteForm(t *testing.T) {
	w := newWorld(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(w.proxyURL)}}
	c, _, err := cws.Dial(ctx, wsURL(w.ws, "ws"), &cws.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("coder dial: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, cws.MessageText, []byte("abs-form")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "abs-form" {
		t.Fatalf("echo = %q %v", msg, err)
	}
	if err := c.Close(cws.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
	eventually(t, 5*time.Second, "tunnel log line for the upgrade", func() bool {
		return strings.Contains(w.logs.String(), "status=101")
	})
}

// wsHandshake is a client WebSocket handshake for path on host.
func wsHandshake(host, path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// maskedFrame is a client text frame (masked, as RFC 6455 requires).
func maskedFrame(payload string) []byte {
	key := []byte{1, 2, 3, 4}
	f := []byte{0x81, 0x80 | byte(len(payload))}
	f = append(f, key...)
	for i := range len(payload) {
		f = append(f, payload[i]^key[i%4])
	}
	return f
}

// readFrame reads one unmasked server frame with a short payload.
func readFrame(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	h := make([]byte, 2)
	if _, err := io.ReadFull(br, h); err != nil {
		t.Fatalf("read frame header: %v", err)
	}
	p := make([]byte, h[1]&0x7f)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatalf("read frame payload: %v", err)
	}
	return string(p)
}

// TestPipelinedConnect writes CONNECT, the WebSocket handshake and the
// first frame in ONE write: all of it belongs to the tunnel.
func TestPipelinedConnect(t *testing.T) {
	w := newWorld(t, nil)
	target := w.ws.Listener.Addr().String()
	c := w.dialProxy()
	var req bytes.Buffer
	req.WriteString("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n")
	req.WriteString(wsHandshake(target, "/echo"))
	req.Write(maskedFrame("first-frame"))
	if _, err := c.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 200 Connection established\r\n" {
		t.Fatalf("status line = %q %v", line, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("200 has headers: %q", blank)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake response = %v %v", resp, err)
	}
	if got := readFrame(t, br); got != "first-frame" {
		t.Fatalf("echo of pipelined frame = %q", got)
	}
}

// TestConnectHTTP10 mirrors the request's version in the 200.
func TestConnectHTTP10(t *testing.T) {
	w := newWorld(t, nil)
	target := w.ws.Listener.Addr().String()
	c := w.dialProxy()
	io.WriteString(c, "CONNECT "+target+" HTTP/1.0\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "HTTP/1.0 200 Connection established\r\n" {
		t.Fatalf("status line = %q %v; want HTTP/1.0 200", line, err)
	}
}

// rawTarget is a TCP listener whose accepted connections the test handles.
func rawTarget(t *testing.T) (net.Listener, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(conns)
				return
			}
			t.Cleanup(func() { c.Close() })
			conns <- c
		}
	}()
	return ln, conns
}

// connectRaw opens a tunnel to addr and returns the client side (with
// its reader, which may hold tunnel bytes) and the target side.
func connectRaw(t *testing.T, w *world, addr string, conns <-chan net.Conn) (net.Conn, *bufio.Reader, net.Conn) {
	t.Helper()
	c := w.dialProxy()
	io.WriteString(c, "CONNECT "+addr+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s = %v %v", addr, resp, err)
	}
	select {
	case tc := <-conns:
		tc.SetDeadline(time.Now().Add(30 * time.Second))
		return c, br, tc
	case <-time.After(5 * time.Second):
		t.Fatal("target saw no connection")
	}
	return nil, nil, nil
}

func withAllow(addrs ...net.Addr) func(*proxy.Config) {
	return func(c *proxy.Config) {
		for _, a := range addrs {
			c.ACL.Rules = append(c.ACL.Rules, allowRule(a))
		}
	}
}

// TestHalfClose checks both directions: the side that shuts its write
// half is passed on as EOF while the other direction keeps flowing.
func TestHalfClose(t *testing.T) {
	ln, conns := rawTarget(t)
	w := newWorld(t, withAllow(ln.Addr()))

	t.Run("client first", func(t *testing.T) {
		c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
		io.WriteString(c, "request")
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(tc)
		if err != nil || string(got) != "request" {
			t.Fatalf("target read %q, %v; want \"request\" then EOF", got, err)
		}
		io.WriteString(tc, "response after client EOF")
		tc.(*net.TCPConn).CloseWrite()
		got, err = io.ReadAll(br)
		if err != nil || string(got) != "response after client EOF" {
			t.Fatalf("client read %q, %v", got, err)
		}
	})
	t.Run("target first", func(t *testing.T) {
		c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
		io.WriteString(tc, "greeting")
		tc.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(br)
		if err != nil || string(got) != "greeting" {
			t.Fatalf("client read %q, %v; want \"greeting\" then EOF", got, err)
		}
		io.WriteString(c, "late words")
		c.(*net.TCPConn).CloseWrite()
		got, err = io.ReadAll(tc)
		if err != nil || string(got) != "late words" {
			t.Fatalf("target read %q, %v", got, err)
		}
	})
	eventually(t, 5*time.Second, "both tunnels closed", func() bool { return w.proxy.OpenTunnels() == 0 })
}

// TestBulkBothWays moves 64 MiB of random bytes each way at once and
// compares SHA-256 digests.
func TestBulkBothWays(t *testing.T) {
	const size = 64 << 20
	ln, conns := rawTarget(t)
	w := newWorld(t, withAllow(ln.Addr()))
	c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	tc.SetDeadline(time.Now().Add(60 * time.Second))

	send := func(dst net.Conn) (chan [32]byte, chan error) {
		sum, errc := make(chan [32]byte, 1), make(chan error, 1)
		go func() {
			h := sha256.New()
			_, err := io.Copy(dst, io.TeeReader(io.LimitReader(rand.Reader, size), h))
			if err == nil {
				err = dst.(*net.TCPConn).CloseWrite()
			}
			var s [32]byte
			copy(s[:], h.Sum(nil))
			sum <- s
			errc <- err
		}()
		return sum, errc
	}
	recv := func(src io.Reader) (chan [32]byte, chan int64) {
		sum, n := make(chan [32]byte, 1), make(chan int64, 1)
		go func() {
			h := sha256.New()
			m, _ := io.Copy(h, src)
			var s [32]byte
			copy(s[:], h.Sum(nil))
			sum <- s
			n <- m
		}()
		return sum, n
	}
	upSent, upErr := send(c)
	downSent, downErr := send(tc)
	upGot, upN := recv(tc)
	downGot, downN := recv(br)
	if err := <-upErr; err != nil {
		t.Fatalf("client send: %v", err)
	}
	if err := <-downErr; err != nil {
		t.Fatalf("target send: %v", err)
	}
	if n := <-upN; n != size {
		t.Errorf("target received %d bytes; want %d", n, size)
	}
	if n := <-downN; n != size {
		t.Errorf("client received %d bytes; want %d", n, size)
	}
	if a, b := <-upSent, <-upGot; a != b {
		t.Errorf("client->target SHA-256 differs")
	}
	if a, b := <-downSent, <-downGot; a != b {
		t.Errorf("target->client SHA-256 differs")
	}
}

// TestTargetReset: a reset from the target ends the tunnel promptly.
func TestTargetReset(t *testing.T) {
	ln, conns := rawTarget(t)
	w := newWorld(t, withAllow(ln.Addr()))
	c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
	tc.(*net.TCPConn).SetLinger(0)
	tc.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := br.ReadByte()
	if err == nil || isTimeout(err) {
		t.Fatalf("client read after target reset = %v; want EOF or reset", err)
	}
	eventually(t, 5*time.Second, "tunnel gone", func() bool { return w.proxy.OpenTunnels() == 0 })
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestIdleTimeout: with --idle-timeout a quiet tunnel is closed.
func TestIdleTimeout(t *testing.T) {
	ln, conns := rawTarget(t)
	w := newWorld(t, func(c *proxy.Config) {
		withAllow(ln.Addr())(c)
		c.IdleTimeout = 300 * time.Millisecond
	})
	c, br, _ := connectRaw(t, w, ln.Addr().String(), conns)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read on idle tunnel = %v; want EOF from the idle timeout", err)
	}
	eventually(t, 5*time.Second, "idle_timeout in log", func() bool {
		return strings.Contains(w.logs.String(), "end=idle_timeout")
	})
}

// TestAbsoluteFormUpgradeVerbatim sends GET ws://... with a frame in the
// same write to a raw target that answers 101 plus bytes in one write.
func TestAbsoluteFormUpgradeVerbatim(t *testing.T) {
	ln, conns := rawTarget(t)
	w := newWorld(t, withAllow(ln.Addr()))
	addr := ln.Addr().String()
	for _, scheme := range []string{"ws", "http"} {
		t.Run(scheme, func(t *testing.T) {
			c := w.dialProxy()
			req := "GET " + scheme + "://" + addr + "/chat?room=1 HTTP/1.1\r\nHost: " + addr + "\r\n" +
				"Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
				"Sec-WebSocket-Version: 13\r\nOrigin: http://example.test\r\nSec-WebSocket-Protocol: chat, superchat\r\n" +
				"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nX-Custom: a  b\r\n" +
				"Proxy-Authorization: Basic dTpw\r\nProxy-Connection: keep-alive\r\n\r\n"
			frame := maskedFrame("pipelined")
			c.Write(append([]byte(req), frame...))

			var tc net.Conn
			select {
			case tc = <-conns:
			case <-time.After(5 * time.Second):
				t.Fatal("target saw no connection")
			}
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			tbr := bufio.NewReader(tc)
			got, err := http.ReadRequest(tbr)
			if err != nil {
				t.Fatalf("target read request: %v", err)
			}
			if got.RequestURI != "/chat?room=1" || got.Proto != "HTTP/1.1" || got.Host != addr {
				t.Errorf("request line = %s %s %s host %s", got.Method, got.RequestURI, got.Proto, got.Host)
			}
			want := map[string]string{
				"Upgrade": "websocket", "Connection": "Upgrade", "Sec-Websocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
				"Sec-Websocket-Version": "13", "Origin": "http://example.test", "Sec-Websocket-Protocol": "chat, superchat",
				"Sec-Websocket-Extensions": "permessage-deflate; client_max_window_bits", "X-Custom": "a  b",
			}
			for k, v := range want {
				if g := got.Header.Get(k); g != v {
					t.Errorf("target got %s = %q; want %q", k, g, v)
				}
			}
			for _, k := range []string{"Proxy-Authorization", "Proxy-Connection", "Keep-Alive"} {
				if g := got.Header.Get(k); g != "" {
					t.Errorf("target got %s = %q; want it stripped", k, g)
				}
			}
			fr := make([]byte, len(frame))
			if _, err := io.ReadFull(tbr, fr); err != nil || !bytes.Equal(fr, frame) {
				t.Fatalf("pipelined frame at target = %x %v; want %x", fr, err, frame)
			}
			resp101 := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Odd-Case: Kept\r\n\r\n"
			tc.Write([]byte(resp101 + "\x81\x05early"))
			back := make([]byte, len(resp101)+7)
			if _, err := io.ReadFull(c, back); err != nil {
				t.Fatal(err)
			}
			if string(back) != resp101+"\x81\x05early" {
				t.Fatalf("client got %q; want the 101 and the early frame byte for byte", back)
			}
			tc.Write([]byte("\x81\x02ok"))
			more := make([]byte, 4)
			if _, err := io.ReadFull(c, more); err != nil || string(more) != "\x81\x02ok" {
				t.Fatalf("later bytes = %q %v", more, err)
			}
		})
	}
}

// TestUpgradeRefusedByTarget: a non-101 answer is passed back, then closed.
func TestUpgradeRefusedByTarget(t *testing.T) {
	checkNoLeaks(t)
	ln, conns := rawTarget(t)
	w := newWorld(t, withAllow(ln.Addr()))
	addr := ln.Addr().String()
	go func() {
		tc, ok := <-conns
		if !ok {
			return
		}
		http.ReadRequest(bufio.NewReader(tc))
		io.WriteString(tc, "HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nX-Why: origin\r\n\r\nnope")
	}()
	resp, body, _, _ := w.rawRequest("GET ws://" + addr + "/ HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if resp.StatusCode != 403 || body != "nope" || resp.Header.Get("X-Why") != "origin" || !resp.Close {
		t.Fatalf("got %d %q %v close=%v; want the target's 403 with Connection: close", resp.StatusCode, body, resp.Header, resp.Close)
	}
}

// TestPlainHTTPForward: an ordinary absolute-form GET is forwarded, and
// Proxy-Authorization never reaches the target.
func TestPlainHTTPForward(t *testing.T) {
	w := newWorld(t, nil)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(w.proxyURL)}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", w.ws.URL+"/plain", nil)
	req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("u:secret")))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `plain GET /plain proxy-auth=""` {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

// TestForwardTargetSwitchesProtocols: a target that answers 101 to a
// request that asked for no upgrade gets the client a 502, not a panic.
func TestForwardTargetSwitchesProtocols(t *testing.T) {
	ln, conns := rawTarget(t)
	w := newWorld(t, withAllow(ln.Addr()))
	go func() {
		tc, ok := <-conns
		if !ok {
			return
		}
		http.ReadRequest(bufio.NewReader(tc))
		io.WriteString(tc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	}()
	addr := ln.Addr().String()
	resp, body, _, _ := w.rawRequest("GET http://" + addr + "/ HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status = %d %q; want 502", resp.StatusCode, body)
	}
}

// TestStatusCodes drives every refusal with raw sockets and checks the
// status, Connection: close and a short body.
func TestStatusCodes(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close() // nothing listens there now: connection refused
	w := newWorld(t, func(c *proxy.Config) {
		c.ACL.Rules = append(c.ACL.Rules, allowRule(refused.Addr()))
		c.Resolver = testResolver{}
	})
	target := w.ws.Listener.Addr().String()
	cases := []struct {
		name, req string
		want      int
	}{
		{"malformed request line", "GARBAGE\r\n\r\n", 400},
		{"connect without port", "CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", 400},
		{"connect with userinfo", "CONNECT user:pw@" + target + " HTTP/1.1\r\n\r\n", 400},
		{"connect with path", "CONNECT " + target + "/x HTTP/1.1\r\n\r\n", 400},
		{"connect bad port", "CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n", 400},
		{"connect port zero", "CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n", 400},
		{"origin form", "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"connect with a body", "CONNECT " + target + " HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"connect chunked", "CONNECT " + target + " HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400},
		{"unknown method", "BREW http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\n\r\n", 501},
		{"trace", "TRACE http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\n\r\n", 501},
		{"oversized headers", "CONNECT " + target + " HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", 431},
		{"denied loopback", "CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n", 403},
		{"target refuses", "CONNECT " + refusedAddr + " HTTP/1.1\r\n\r\n", 502},
		{"dns fails", "CONNECT nxdomain.test:443 HTTP/1.1\r\n\r\n", 502},
		{"dial times out", "CONNECT slow.test:443 HTTP/1.1\r\n\r\n", 504},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, _, _ := w.rawRequest(tc.req)
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d (%q); want %d", resp.StatusCode, body, tc.want)
			}
			if !resp.Close {
				t.Errorf("no Connection: close on %d", resp.StatusCode)
			}
			if len(body) == 0 || len(body) > 200 {
				t.Errorf("body %q: want a short text", body)
			}
			if strings.Contains(body, "pw@") || strings.Contains(body, "lookup") {
				t.Errorf("body %q leaks details", body)
			}
		})
	}
	if strings.Contains(w.logs.String(), "user:pw") {
		t.Error("log contains the userinfo of a CONNECT target")
	}
}

// testResolver answers for the .test names of TestStatusCodes: one does
// not exist, one never answers (the dial timeout must cut it).
type testResolver struct{}

func (testResolver) LookupNetIP(ctx context.Context, _, host string) ([]netip.Addr, error) {
	switch host {
	case "slow.test":
		<-ctx.Done()
		return nil, ctx.Err()
	default:
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
}

// TestHeaderTimeout: a client that never finishes its headers is closed.
func TestHeaderTimeout(t *testing.T) {
	w := newWorld(t, func(c *proxy.Config) { c.HeaderTimeout = 200 * time.Millisecond })
	c := w.dialProxy()
	io.WriteString(c, "CONNECT 127.0.0.1:1 HTTP/1.1\r\nX-Slow: ")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("read = %v; want the proxy to close the connection", err)
	}
}

// TestShutdownDrains: Shutdown waits for an open tunnel and returns once
// it ends; with an expired context it closes the tunnel itself.
func TestShutdownDrains(t *testing.T) {
	ln, conns := rawTarget(t)
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprintf("force=%v", force), func(t *testing.T) {
			w := newWorld(t, withAllow(ln.Addr()))
			c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- w.proxy.Shutdown(ctx) }()
			// New connections are refused once draining.
			eventually(t, 5*time.Second, "listener closed", func() bool {
				nc, err := net.DialTimeout("tcp", w.proxyURL.Host, time.Second)
				if err == nil {
					nc.Close()
				}
				return err != nil
			})
			select {
			case err := <-done:
				t.Fatalf("Shutdown returned %v with a tunnel open", err)
			default:
			}
			io.WriteString(tc, "still here")
			buf := make([]byte, 10)
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "still here" {
				t.Fatalf("tunnel during drain: %q %v", buf, err)
			}
			if force {
				cancel()
				if err := <-done; err == nil {
					t.Fatal("forced Shutdown returned nil; want the context error")
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := br.ReadByte(); err == nil || isTimeout(err) {
					t.Fatalf("tunnel still open after forced shutdown: %v", err)
				}
				return
			}
			c.Close()
			tc.Close()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Shutdown = %v; want nil after the tunnel ended", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown did not return after the last tunnel ended")
			}
		})
	}
}

var _ = url.URL{}
