package test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wsegress/wsegress/proxy"
)

// TestMaxTunnelLifetime: a tunnel that reaches --max-tunnel-lifetime is
// closed cleanly: both ends read EOF (a FIN, not a reset), the log line
// says end=lifetime and the metrics count it.
func TestMaxTunnelLifetime(t *testing.T) {
	const lifetime = 300 * time.Millisecond
	ln, conns := rawTarget(t)
	w := newWorld(t, func(c *proxy.Config) {
		withAllow(ln.Addr())(c)
		c.MaxTunnelLifetime = lifetime
	})
	sc := newScraper(t, w)
	start := time.Now()
	c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
	defer c.Close()

	// Bytes flow until the lifetime is up.
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(tc, got); err != nil || string(got) != "ping" {
		t.Fatalf("target read %q, %v", got, err)
	}
	io.WriteString(tc, "pong")
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v", got, err)
	}

	targetEnd := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(tc) // nil at EOF; a reset is an error
		targetEnd <- err
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Fatalf("client: read %q, %v; want a clean EOF from the lifetime", rest, err)
	}
	// The timer cannot fire before lifetime less its 10% jitter.
	if d := time.Since(start); d < lifetime-lifetime/10 {
		t.Errorf("tunnel closed after %v; lifetime %v less 10%% jitter is the earliest", d, lifetime)
	}
	select {
	case err := <-targetEnd:
		if err != nil {
			t.Fatalf("target: %v; want a clean EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("target saw no EOF")
	}
	eventually(t, 5*time.Second, "end=lifetime in log", func() bool {
		return strings.Contains(w.logs.String(), "end=lifetime")
	})
	if strings.Contains(w.logs.String(), "max tunnel lifetime reached") {
		t.Errorf("a lifetime end is logged as an error:\n%s", w.logs)
	}
	if v := sc.value(t, `wsegress_tunnel_ends_total{reason="lifetime"}`); v != 1 {
		t.Errorf("wsegress_tunnel_ends_total{reason=\"lifetime\"} = %v; want 1", v)
	}
}

// TestHandoverReadiness: Handover (the old process's side of a SIGUSR2
// handover) turns /readyz to 503 "handing over" at once, keeps open
// tunnels echoing, and returns once they end.
func TestHandoverReadiness(t *testing.T) {
	ln, conns := rawTarget(t)
	w := newWorld(t, withAllow(ln.Addr()))
	sc := newScraper(t, w)
	if status, _ := sc.get(t, "/readyz"); status != 200 {
		t.Fatalf("/readyz before = %d; want 200", status)
	}
	c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
	defer c.Close()

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- w.proxy.Handover(ctx)
	}()
	eventually(t, 5*time.Second, "/readyz 503 handing over", func() bool {
		status, body := sc.get(t, "/readyz")
		return status == 503 && strings.TrimSpace(body) == "handing over"
	})
	// Not accepting: the listener is closed (here no successor holds it).
	if nc, err := net.DialTimeout("tcp", w.proxyURL.Host, time.Second); err == nil {
		nc.Close()
		t.Error("proxy still accepts after Handover")
	}
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(tc, got); err != nil || string(got) != "ping" {
		t.Fatalf("tunnel after Handover: target read %q, %v", got, err)
	}
	io.WriteString(tc, "pong")
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "pong" {
		t.Fatalf("tunnel after Handover: client read %q, %v", got, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Handover returned %v with a tunnel open", err)
	default:
	}
	c.Close()
	tc.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Handover: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Handover did not return after the last tunnel closed")
	}
}

// TestReadyzWhenFullAndDraining: with --ready-when-full a full pool keeps
// /readyz at 200; a drain turns it to 503 "draining" while the tunnel
// lives on.
func TestReadyzWhenFullAndDraining(t *testing.T) {
	ln, conns := rawTarget(t)
	w := newWorld(t, func(c *proxy.Config) {
		withAllow(ln.Addr())(c)
		c.Limits.Global = 1
		c.ReadyWhenFull = true
	})
	sc := newScraper(t, w)
	c, br, tc := connectRaw(t, w, ln.Addr().String(), conns)
	defer c.Close()
	if status, body := sc.get(t, "/readyz"); status != 200 {
		t.Errorf("/readyz with the pool full and --ready-when-full = %d %q; want 200", status, body)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- w.proxy.Shutdown(ctx)
	}()
	eventually(t, 5*time.Second, "/readyz 503 draining", func() bool {
		status, body := sc.get(t, "/readyz")
		return status == 503 && strings.TrimSpace(body) == "draining"
	})
	io.WriteString(tc, "pong")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "pong" {
		t.Fatalf("tunnel during the drain: client read %q, %v", got, err)
	}
	c.Close()
	tc.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last tunnel closed")
	}
}
