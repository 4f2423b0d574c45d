package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxTap bounds what the tap keeps of one connection: the request heads
// are at its start, the rest is WebSocket frames.
const maxTap = 256 << 10

// runTap relays TCP connections to the proxy and records, per connection,
// the bytes the client sent (tap-N.raw). The client's handshake is read
// from there, so it is what the client put on the wire, not what a client
// library claims to have sent.
func runTap(args []string) error {
	fs := flag.NewFlagSet("tap", flag.ContinueOnError)
	dir := fs.String("dir", "", "record directory (required)")
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "proxy address host:port (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *upstream == "" {
		return fmt.Errorf("tap: -dir and -upstream are required")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen tap: %w", err)
	}
	logger := log.New(os.Stderr, "tap: ", log.LstdFlags|log.Lmicroseconds)
	rec := &recorder{dir: *dir}
	if err := rec.writeAtomic("tap-ready", []byte(ln.Addr().String()+"\n")); err != nil {
		return err
	}
	var (
		mu    sync.Mutex // guards conns
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	}()
	defer wg.Wait()
	var n atomic.Int64
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil // closed by the signal handler
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		i := n.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
			if err := relay(c, *upstream, filepath.Join(*dir, fmt.Sprintf("tap-%d.raw", i))); err != nil {
				logger.Printf("connection %d: %v", i, err)
			}
		}()
	}
}

func relay(client net.Conn, upstream, recordPath string) error {
	defer client.Close()
	up, err := net.DialTimeout("tcp", upstream, 10*time.Second)
	if err != nil {
		return fmt.Errorf("dial upstream %s: %w", upstream, err)
	}
	defer up.Close()
	f, err := os.Create(recordPath)
	if err != nil {
		return fmt.Errorf("create record: %w", err)
	}
	defer f.Close()

	errc := make(chan error, 2)
	// The record is written before the bytes go on, so by the time the
	// target has seen a handshake the tap file holds it.
	go func() { errc <- copyHalf(up, io.TeeReader(client, &capWriter{w: f, left: maxTap})) }()
	go func() { errc <- copyHalf(client, up) }()
	err = <-errc
	if err != nil {
		// One side broke: unblock the other copier.
		_ = client.Close()
		_ = up.Close()
	}
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

// copyHalf copies src to dst and then half-closes dst, so a client's or the
// proxy's CloseWrite passes through the tap unchanged.
func copyHalf(dst net.Conn, src io.Reader) error {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}

// capWriter writes at most left bytes to w and silently drops the rest.
type capWriter struct {
	w    io.Writer
	left int
}

func (c *capWriter) Write(p []byte) (int, error) {
	if c.left > 0 {
		n := min(len(p), c.left)
		if _, err := c.w.Write(p[:n]); err != nil {
			return 0, err
		}
		c.left -= n
	}
	return len(p), nil
}
