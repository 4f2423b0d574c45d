package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Raw-port modes: the first byte a client sends picks what the server does.
const (
	modeSink   = 'u' // read until EOF, acking every sinkAck bytes received
	modeSource = 'd' // write until the peer goes away
	modeBoth   = 'b' // sink and source at once
	modeEcho   = 'e' // echo bytes back
)

const bulkChunk = 256 << 10

// sinkAck is the unit in which the sink acknowledges what it received: it
// writes the cumulative count (8 bytes, big-endian) each time the count
// crosses a multiple. The client stops on a multiple and waits for that ack,
// so no bytes still in socket buffers are counted, and no half-close is
// needed (Squid and tinyproxy end the whole tunnel on a half-close).
const sinkAck = 4 << 20

// runEchoServer is the "echo" subcommand: a WebSocket echo server and a raw TCP
// echo/sink/source server on loopback. It runs in its own process so that
// the idle scenario's ~9,000 server-side sockets do not count against the
// load generator's descriptor limit. It prints one "ready ws=ADDR raw=ADDR"
// line on stderr and exits on SIGTERM (the parent also sets a death signal).
func runEchoServer() error {
	if _, err := raiseNoFile(); err != nil {
		return err
	}
	wsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen ws: %w", err)
	}
	rawLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen raw: %w", err)
	}
	up := websocket.Upgrader{
		// Small buffers: the idle scenario holds thousands of these.
		ReadBufferSize:  512,
		WriteBufferSize: 512,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { wsEcho(&up, w, r) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(wsLn) }()
	go serveRaw(rawLn)
	fmt.Fprintf(os.Stderr, "ready ws=%s raw=%s\n", wsLn.Addr(), rawLn.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	_ = rawLn.Close()
	return srv.Close()
}

// wsEcho upgrades and echoes every data message; gorilla's default ping
// handler answers pings while ReadMessage is waiting.
func wsEcho(up *websocket.Upgrader, w http.ResponseWriter, r *http.Request) {
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	for {
		mt, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, msg); err != nil {
			return
		}
	}
}

// serveRaw accepts raw TCP clients until ln is closed; on EMFILE it backs
// off instead of spinning.
func serveRaw(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go rawConn(c)
	}
}

func rawConn(c net.Conn) {
	defer c.Close()
	mode := make([]byte, 1)
	if _, err := io.ReadFull(c, mode); err != nil {
		return
	}
	switch mode[0] {
	case modeSink:
		sink(c, true)
	case modeSource:
		source(c)
	case modeBoth:
		go source(c)
		sink(c, false)
	case modeEcho:
		_, _ = io.CopyBuffer(c, struct{ io.Reader }{c}, make([]byte, bulkChunk))
	}
}

// sink reads until EOF or error; with ack it acknowledges every sinkAck
// bytes (see sinkAck).
func sink(c net.Conn, ack bool) {
	buf := make([]byte, bulkChunk)
	var n int64
	var b [8]byte
	for {
		k, err := c.Read(buf)
		if ack && (n+int64(k))/sinkAck > n/sinkAck {
			binary.BigEndian.PutUint64(b[:], uint64(n+int64(k)))
			if _, err := c.Write(b[:]); err != nil {
				return
			}
		}
		n += int64(k)
		if err != nil {
			return
		}
	}
}

// source writes zeros until the write fails.
func source(c net.Conn) {
	buf := make([]byte, bulkChunk)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}
