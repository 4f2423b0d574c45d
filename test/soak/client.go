package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// conn is a client connection; all reads go through br, which may hold
// bytes that arrived right behind a response.
type conn struct {
	net.Conn
	br *bufio.Reader
}

// dialFrom connects to addr from the loopback address src (all of
// 127.0.0.0/8 is local on Linux). rcvbuf > 0 sets SO_RCVBUF before the
// connect, so that a stalled reader's window stays small.
func dialFrom(ctx context.Context, src netip.Addr, addr string, rcvbuf int) (*conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			return errors.Join(err, serr)
		}
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, br: bufio.NewReaderSize(c, 1024)}, nil
}

// connect sends CONNECT target with the given Proxy-Authorization (""
// for none) and returns the response's status code. Any response body is
// consumed, so the connection can be reused after a 407.
func (c *conn) connect(target, auth string) (int, error) {
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if auth != "" {
		req += "Proxy-Authorization: " + auth + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return 0, err
	}
	code, n, err := c.readResponse()
	if err == nil && code != 200 && n > 0 {
		_, err = io.CopyN(io.Discard, c.br, n)
	}
	return code, err
}

// readResponse reads a status line and headers and returns the status
// code and Content-Length (0 if absent).
func (c *conn) readResponse() (code int, length int64, err error) {
	line, err := c.br.ReadString('\n')
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return 0, 0, fmt.Errorf("bad status line %.40q", line)
	}
	if code, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, fmt.Errorf("bad status line %.40q", line)
	}
	for range 100 {
		h, err := c.br.ReadString('\n')
		if err != nil {
			return 0, 0, err
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			return code, length, nil
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, 0, errors.New("more than 100 header lines")
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// upgrade performs the WebSocket handshake on a tunnel.
func (c *conn) upgrade(target string) error {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	req := "GET / HTTP/1.1\r\nHost: " + target + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return fmt.Errorf("write upgrade: %w", err)
	}
	code, _, err := c.readResponse()
	if err != nil {
		return fmt.Errorf("read upgrade response: %w", err)
	}
	if code != 101 {
		return fmt.Errorf("upgrade: status %d", code)
	}
	return nil
}

// echo sends p as one masked binary frame and reads the echoed frame.
func (c *conn) echo(p []byte) error {
	frame := make([]byte, 0, 6+len(p))
	frame = append(frame, 0x82, 0x80|byte(len(p)), 0, 0, 0, 0) // zero mask: payload as is
	frame = append(frame, p...)
	if _, err := c.Write(frame); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return fmt.Errorf("read frame: %w", err)
	}
	if h[0] != 0x82 || int(h[1]) != len(p) {
		return fmt.Errorf("unexpected frame header %x", h)
	}
	_, err := io.CopyN(io.Discard, c.br, int64(len(p)))
	return err
}

// errKind names a failed exchange for the tallies: a timeout, a
// connection the other side closed, or "error".
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "closed"
	}
	return "error"
}

// deadline sets c's deadline to d from now.
func (c *conn) deadline(d time.Duration) { _ = c.SetDeadline(time.Now().Add(d)) }

// attackAddr is the i-th attacker source address, 127.0.0.10 and up,
// cycling through n addresses.
func attackAddr(i, n int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i%n)})
}

// goodAddr is the good clients' source address.
var goodAddr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
