package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// dialer opens connections to a target, through an HTTP CONNECT proxy or
// directly. The client is hand-written, not a WebSocket library, so that the
// load generator spends as little of its core as possible per message and
// holds little memory per idle tunnel.
type dialer struct {
	proxy string // proxy address; "" dials the target directly
	auth  string // Proxy-Authorization value; "" sends none
}

// tunnel is an established connection to the target. All reads must go
// through br: it may hold bytes that arrived right behind a response.
type tunnel struct {
	net.Conn
	br *bufio.Reader
}

// dial connects to target, sending CONNECT first when d has a proxy.
// ctx bounds the whole setup.
func (d dialer) dial(ctx context.Context, target string) (*tunnel, error) {
	addr := target
	if d.proxy != "" {
		addr = d.proxy
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	t := &tunnel{Conn: c, br: bufio.NewReaderSize(c, 512)}
	if d.proxy == "" {
		return t, nil
	}
	setCtxDeadline(ctx, c)
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if d.auth != "" {
		req += "Proxy-Authorization: " + d.auth + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		c.Close()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	code, _, err := readResponse(t.br, "")
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read CONNECT response: %w", err)
	}
	if code != 200 {
		c.Close()
		return nil, fmt.Errorf("CONNECT: status %d", code)
	}
	_ = c.SetDeadline(time.Time{})
	return t, nil
}

func setCtxDeadline(ctx context.Context, c net.Conn) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
}

// readResponse reads an HTTP/1 status line and headers, returning the status
// code and the value of header want ("" for none).
func readResponse(br *bufio.Reader, want string) (code int, value string, err error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, "", err
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return 0, "", fmt.Errorf("bad status line %.40q", line)
	}
	if code, err = strconv.Atoi(f[1]); err != nil {
		return 0, "", fmt.Errorf("bad status line %.40q", line)
	}
	for i := 0; ; i++ {
		if i == 100 {
			return 0, "", errors.New("more than 100 header lines")
		}
		h, err := br.ReadString('\n')
		if err != nil {
			return 0, "", err
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			return code, value, nil
		}
		if k, v, ok := strings.Cut(h, ":"); ok && want != "" && strings.EqualFold(k, want) {
			value = strings.TrimSpace(v)
		}
	}
}

// wsConn is a client WebSocket on a tunnel: frames out are masked as RFC
// 6455 requires, frames in are unmasked (the echo server is gorilla).
type wsConn struct {
	*tunnel
	mask [4]byte
	wbuf []byte
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// WebSocket opcodes used here.
const (
	opBinary = 0x2
	opPing   = 0x9
	opPong   = 0xA
)

// openWS dials target (via the proxy) and performs the WebSocket handshake,
// checking Sec-WebSocket-Accept.
func openWS(ctx context.Context, d dialer, target string) (*wsConn, error) {
	t, err := d.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return upgradeWS(ctx, t, target)
}

// upgradeWS performs the WebSocket handshake on an established tunnel; it
// closes t on failure.
func upgradeWS(ctx context.Context, t *tunnel, target string) (*wsConn, error) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	setCtxDeadline(ctx, t.Conn)
	req := "GET / HTTP/1.1\r\nHost: " + target + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(t.Conn, req); err != nil {
		t.Close()
		return nil, fmt.Errorf("write upgrade: %w", err)
	}
	code, accept, err := readResponse(t.br, "Sec-WebSocket-Accept")
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("read upgrade response: %w", err)
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if code != 101 || accept != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Close()
		return nil, fmt.Errorf("upgrade: status %d, Sec-WebSocket-Accept ok %v", code, accept == base64.StdEncoding.EncodeToString(sum[:]))
	}
	_ = t.SetDeadline(time.Time{})
	w := &wsConn{tunnel: t}
	copy(w.mask[:], raw[:4])
	return w, nil
}

// writeFrame sends one final, masked frame with payload p (< 64 KiB).
func (w *wsConn) writeFrame(op byte, p []byte) error {
	if len(p) >= 1<<16 {
		return errors.New("frame too large for this client")
	}
	b := w.wbuf[:0]
	b = append(b, 0x80|op)
	if len(p) < 126 {
		b = append(b, 0x80|byte(len(p)))
	} else {
		b = append(b, 0x80|126, byte(len(p)>>8), byte(len(p)))
	}
	b = append(b, w.mask[:]...)
	for i, c := range p {
		b = append(b, c^w.mask[i&3])
	}
	w.wbuf = b
	_, err := w.Conn.Write(b)
	return err
}

// readFrame reads one unmasked frame into buf and returns its opcode and
// payload (a prefix of buf).
func (w *wsConn) readFrame(buf []byte) (byte, []byte, error) {
	var h [8]byte
	if _, err := io.ReadFull(w.br, h[:2]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("masked frame from server")
	}
	// h is reused for the extended length below; keep the opcode.
	op := h[0] & 0x0f
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(w.br, h[:2]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err := io.ReadFull(w.br, h[:8]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(h[:8])
	}
	if n > uint64(len(buf)) {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds buffer", n)
	}
	if _, err := io.ReadFull(w.br, buf[:n]); err != nil {
		return 0, nil, err
	}
	return op, buf[:n], nil
}

// roundTrip sends p with opcode op and waits for the echo: the same
// payload back, as a pong for a ping and as the same opcode otherwise.
func (w *wsConn) roundTrip(op byte, p, buf []byte) error {
	if err := w.writeFrame(op, p); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return w.expect(op, len(p), buf)
}

// expect reads the answer to a frame of opcode op and length n.
func (w *wsConn) expect(op byte, n int, buf []byte) error {
	want := op
	if op == opPing {
		want = opPong
	}
	got, payload, err := w.readFrame(buf)
	if err != nil {
		return fmt.Errorf("read frame: %w", err)
	}
	if got != want || len(payload) != n {
		return fmt.Errorf("got opcode %#x len %d; want %#x len %d", got, len(payload), want, n)
	}
	return nil
}
