package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

var errUpstreamRefused = errors.New("upstream proxy refused CONNECT")

// httpConnectDialer tunnels through a parent HTTP proxy with CONNECT.
type httpConnectDialer struct {
	parent  *url.URL
	forward *net.Dialer
}

// DialContext opens a tunnel to addr through the parent. The context bounds
// the whole exchange: dial, CONNECT and the parent's answer.
func (d *httpConnectDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.forward.DialContext(ctx, network, d.parent.Host)
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s: %w", d.parent.Host, err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := d.parent.User; u != nil {
		p, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+p)) + "\r\n"
	}
	req += "\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		c.Close()
		return nil, fmt.Errorf("upstream %s: write CONNECT: %w", d.parent.Host, ctxErr(ctx, err))
	}
	br := bufio.NewReaderSize(c, 1024)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("upstream %s: read answer: %w", d.parent.Host, ctxErr(ctx, err))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("upstream %s answered %q: %w", d.parent.Host, resp.Status, errUpstreamRefused)
	}
	if !stop() {
		c.Close()
		return nil, ctx.Err()
	}
	if br.Buffered() > 0 {
		// The parent sent tunnel bytes right behind its 200: keep them.
		return &prefixConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// ctxErr prefers the context's error (a deadline) over the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// prefixConn reads buffered bytes before the connection's own.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite keeps half-close working through the wrapper.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
