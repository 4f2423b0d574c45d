package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Targets run in this process on 127.0.0.1: an echo target (WebSocket,
// echoes every frame) and a stream target (WebSocket handshake, then
// binary frames without end while the peer takes them).
type targets struct {
	echo, stream net.Listener
	stopped      atomic.Bool
}

func startTargets() (*targets, error) {
	t := &targets{}
	var err error
	if t.echo, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if t.stream, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.echo.Close()
		return nil, err
	}
	go t.serve(t.echo, t.echoConn)
	go t.serve(t.stream, t.streamConn)
	return t, nil
}

func (t *targets) close() {
	t.stopped.Store(true)
	t.echo.Close()
	t.stream.Close()
}

func (t *targets) serve(ln net.Listener, h func(net.Conn, *bufio.Reader)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE: back off
			continue
		}
		go func() {
			defer c.Close()
			br := bufio.NewReaderSize(c, 512)
			if handshake(c, br) == nil {
				h(c, br)
			}
		}()
	}
}

// handshake reads a WebSocket upgrade request and answers 101.
func handshake(c net.Conn, br *bufio.Reader) error {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if key == "" || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		return errors.New("not a WebSocket upgrade")
	}
	_ = c.SetReadDeadline(time.Time{})
	sum := sha1.Sum([]byte(key + wsGUID))
	_, err = c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n"))
	return err
}

// echoConn answers each masked client frame (payload < 126 bytes, as the
// good clients send) with the same payload unmasked.
func (t *targets) echoConn(c net.Conn, br *bufio.Reader) {
	var h [6]byte
	buf := make([]byte, 2+125)
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return
		}
		n := int(h[1] & 0x7f)
		if h[1]&0x80 == 0 || n > 125 {
			return
		}
		p := buf[2 : 2+n]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		for i := range p {
			p[i] ^= h[2+i&3]
		}
		buf[0], buf[1] = h[0], byte(n)
		if _, err := c.Write(buf[:2+n]); err != nil {
			return
		}
	}
}

// streamFrame is one unmasked 16 KiB binary frame.
var streamFrame = func() []byte {
	b := make([]byte, 4+16<<10)
	b[0], b[1], b[2], b[3] = 0x82, 126, 0x40, 0x00
	return b
}()

// streamConn writes frames until the peer goes away or the soak ends. A
// small send buffer keeps the bytes parked in kernel buffers per stalled
// tunnel small; what the proxy holds is the proxy's own.
func (t *targets) streamConn(c net.Conn, _ *bufio.Reader) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(16 << 10)
	}
	for !t.stopped.Load() {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(streamFrame); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
	}
}
