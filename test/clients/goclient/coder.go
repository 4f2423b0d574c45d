package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"
)

// runCoder dials with coder/websocket through an http.Client whose
// Transport has an explicit Proxy. net/http then sends ws:// (as http://)
// to the proxy as an absolute-form GET with Upgrade, and wss:// (as
// https://) through a CONNECT tunnel; credentials come from the proxy
// URL's user info in both cases. http.ProxyURL, unlike
// ProxyFromEnvironment, also proxies loopback targets.
func runCoder(ctx context.Context, o options, r *report) {
	pu, err := url.Parse(o.proxy)
	if err != nil || pu.Host == "" {
		r.fail("connect", "bad -proxy URL")
		return
	}
	hc := &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyURL(pu),
		TLSHandshakeTimeout: 10 * time.Second,
	}}
	c, resp, err := websocket.Dial(ctx, caseURL(o), &websocket.DialOptions{
		HTTPClient:      hc,
		HTTPHeader:      handshakeHeader("go-coder", o.caseID),
		Subprotocols:    subprotocols("go-coder"),
		CompressionMode: websocket.CompressionContextTakeover, // offers permessage-deflate
	})
	if o.mode == "fail" {
		if err == nil {
			c.CloseNow()
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
	defer c.CloseNow()
	if p := c.Subprotocol(); p != "wsegress-echo" {
		r.fail("connect", "subprotocol %q; want wsegress-echo", p)
		return
	}
	c.SetReadLimit(4 << 20)

	echo := func(typ websocket.MessageType, data []byte) error {
		if err := c.Write(ctx, typ, data); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		gt, got, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if gt != typ || !bytes.Equal(got, data) {
			return fmt.Errorf("echo differs: %v, %d bytes; want %v, %d bytes", gt, len(got), typ, len(data))
		}
		return nil
	}

	text := "hello from go-coder " + o.caseID
	if err := echo(websocket.MessageText, []byte(text)); err != nil {
		r.fail("text-echo", "%v", err)
		return
	}
	r.ok("text-echo", "%q", text)

	bin := payload1MiB(2)
	if err := echo(websocket.MessageBinary, bin); err != nil {
		r.fail("binary-1mib", "%v", err)
		return
	}
	r.ok("binary-1mib", "%d bytes byte-exact", len(bin))

	// Ping waits for a pong that only a concurrent Read can see; echo until
	// it returns (the pong may arrive before or after an echo).
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	pinged := make(chan error, 1)
	go func() { pinged <- c.Ping(pctx) }()
	var perr error
	done := false
	for i := 0; i < 5 && !done; i++ {
		if err := echo(websocket.MessageText, []byte(fmt.Sprintf("after-ping %d", i))); err != nil {
			r.fail("ping-pong", "%v", err)
			return
		}
		select {
		case perr = <-pinged:
			done = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !done {
		perr = <-pinged // bounded by pctx
	}
	if perr != nil {
		r.fail("ping-pong", "ping: %v", perr)
		return
	}
	r.ok("ping-pong", "Ping returned after the pong")

	// Close returns nil only when the server answered with the same code.
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		r.fail("close-1000", "close: %v", err)
		return
	}
	r.ok("close-1000", "server answered close 1000")
}
