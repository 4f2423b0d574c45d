package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wsegress/wsegress/proxy"
)

// TestShutdownAnswersAcceptedConns: a connection accepted before Shutdown
// gets an HTTP answer, never a bare EOF. Whatever it sends after the
// drain began (on a fresh conn, on one idle after an earlier answer, or
// the rest of a request it had begun) gets 503 "proxy shutting down" with
// Retry-After and Connection: close; a tunnel opened before runs on until
// it ends; nothing new is accepted.
func TestShutdownAnswersAcceptedConns(t *testing.T) {
	const n = 8
	w := newWorld(t, func(c *proxy.Config) {
		c.HeaderTimeout = 10 * time.Second // the conns wait for the drain to begin
		c.PACProxy = "proxy.example:3128"
	})
	sc := newScraper(t, w)
	target := w.ws.Listener.Addr().String()

	tunnel := w.client(t, "")
	if resp, _, err := tunnel.connect(target); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT before the drain: %v %v; want 200", resp, err)
	}
	if err := tunnel.wsEcho(target, "before"); err != nil {
		t.Fatal(err)
	}
	fresh := make([]*proxyConn, n)
	for i := range fresh {
		fresh[i] = w.client(t, "")
	}
	idle := w.client(t, "")
	if resp, _, err := idle.roundTrip("GET /proxy.pac HTTP/1.1\r\nHost: p\r\n\r\n", "GET"); err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("GET /proxy.pac: %v %v; want 200, kept alive", resp, err)
	}
	partial := w.client(t, "")
	if _, err := io.WriteString(partial, "CONNECT "+target+" HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "every conn accepted", func() bool {
		return sc.value(t, "wsegress_client_conns") == n+3
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.proxy.Shutdown(ctx) }()
	eventually(t, 5*time.Second, "draining", func() bool {
		code, _ := sc.get(t, "/readyz")
		return code != 200
	})
	eventually(t, 5*time.Second, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", w.proxyURL.Host, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	check503 := func(what string, p *proxyConn, req string) {
		t.Helper()
		resp, body, err := p.roundTrip(req, "CONNECT")
		if err != nil {
			t.Fatalf("%s: %v; want 503, not a bare close", what, err)
		}
		if resp.StatusCode != 503 || !strings.Contains(body, "proxy shutting down") || !resp.Close || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: %d %q (Connection close %v, Retry-After %q); want 503 proxy shutting down, Connection: close, Retry-After",
				what, resp.StatusCode, body, resp.Close, resp.Header.Get("Retry-After"))
		}
		assertClosedWithin(t, p, 5*time.Second, what+" after its 503")
	}
	connect := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n"
	for i, p := range fresh {
		check503(fmt.Sprintf("fresh conn %d", i), p, connect)
	}
	check503("idle conn", idle, connect)
	check503("rest of a request", partial, "Host: "+target+"\r\n\r\n")

	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a tunnel open", err)
	default:
	}
	if err := tunnel.echo("during"); err != nil {
		t.Fatalf("tunnel during the drain: %v", err)
	}
	tunnel.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown = %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last conn and tunnel ended")
	}
}
