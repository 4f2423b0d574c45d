//go:build linux

package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsegress/wsegress/acl"
)

// sockOpts is what keep-alive set on one socket, read back with getsockopt.
type sockOpts struct{ on, idle, intvl, cnt int }

func readSockOpts(t *testing.T, c net.Conn) sockOpts {
	t.Helper()
	kc, ok := keepAliver(c)
	if !ok {
		t.Fatalf("keepAliver(%T) found no TCP socket", c)
	}
	rc, err := kc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var o sockOpts
	var serr error
	err = rc.Control(func(fd uintptr) {
		get := func(level, opt int) int {
			v, err := syscall.GetsockoptInt(int(fd), level, opt)
			if err != nil && serr == nil {
				serr = err
			}
			return v
		}
		o = sockOpts{
			on:    get(syscall.SOL_SOCKET, syscall.SO_KEEPALIVE),
			idle:  get(syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE),
			intvl: get(syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL),
			cnt:   get(syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT),
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// tcpPair returns both ends of a loopback TCP connection, made with
// keep-alive off as the proxy's listeners and dialer make them.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = (&net.Dialer{KeepAlive: -1}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// wrapped hides a conn behind a NetConn method, as *tls.Conn does.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// TestArmKeepAlive: keep-alive is off until the timer fires, then on with
// idle d (rounded up to a second) and Go's default interval and count on
// both sockets, through a NetConn wrapper; a stopped timer sets nothing.
func TestArmKeepAlive(t *testing.T) {
	a, b := tcpPair(t)
	c, d := tcpPair(t)
	for _, conn := range []net.Conn{a, b, c, d} {
		if got := readSockOpts(t, conn).on; got != 0 {
			t.Fatalf("SO_KEEPALIVE before arming = %d; want 0", got)
		}
	}
	stopped := armKeepAlive(50*time.Millisecond, wrapped{c}, d)
	stopped.Stop()
	live := armKeepAlive(100*time.Millisecond, wrapped{wrapped{a}}, b)
	defer live.Stop()
	want := sockOpts{on: 1, idle: 1, intvl: 15, cnt: 9}
	eventually(t, 5*time.Second, "keep-alive on both sockets", func() bool {
		return readSockOpts(t, a) == want && readSockOpts(t, b) == want
	})
	// The stopped timer was due before the live one fired.
	for _, conn := range []net.Conn{c, d} {
		if got := readSockOpts(t, conn).on; got != 0 {
			t.Errorf("SO_KEEPALIVE after a stopped arming = %d; want 0", got)
		}
	}
	if armKeepAlive(-1, a, b) != nil {
		t.Error("armKeepAlive(-1) armed a timer; want nil (keep-alive off)")
	}
	// A closed conn, a conn that is not TCP and nil are skipped quietly.
	p, q := net.Pipe()
	defer q.Close()
	c.Close()
	setKeepAlive(time.Second, p, c, nil)
	if _, ok := keepAliver(p); ok {
		t.Error("keepAliver(net.Pipe) found a TCP socket")
	}
}

// TestTunnelKeepAliveLate: a tunnel's client and target sockets get no
// keep-alive while the tunnel is younger than Config.KeepAlive, and get it
// once it is older.
func TestTunnelKeepAliveLate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepAlive time.Duration
		want      sockOpts
	}{
		{"young", time.Hour, sockOpts{}},
		{"old", 200 * time.Millisecond, sockOpts{on: 1, idle: 1, intvl: 15, cnt: 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, proxyAddr, targetAddr := startKeepAliveWorld(t, tc.keepAlive)
			c, err := net.Dial("tcp", proxyAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\n", targetAddr)
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.Contains(line, " 200 ") {
				t.Fatalf("CONNECT answer = %q, %v; want 200", line, err)
			}
			var tun *tunnel
			eventually(t, 5*time.Second, "the tunnel tracked", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				for tt := range s.tunnels {
					tun = tt
				}
				return tun != nil
			})
			check := func() bool {
				return readSockOpts(t, tun.client) == tc.want && readSockOpts(t, tun.target) == tc.want
			}
			if tc.want.on == 0 {
				if readSockOpts(t, tun.client).on != 0 || readSockOpts(t, tun.target).on != 0 {
					t.Errorf("young tunnel: keep-alive client %+v target %+v; want off", readSockOpts(t, tun.client), readSockOpts(t, tun.target))
				}
				return
			}
			eventually(t, 5*time.Second, "keep-alive on both sockets of the tunnel", check)
		})
	}
}

// startKeepAliveWorld runs a proxy with the given keep-alive that may
// reach one plain TCP sink, on a listener without per-accept keep-alive.
func startKeepAliveWorld(t *testing.T, keepAlive time.Duration) (*Server, string, string) {
	t.Helper()
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	cfg := Config{Listen: "127.0.0.1:0", KeepAlive: keepAlive}
	cfg.ACL.Rules = []acl.RuleSpec{{Action: "allow", Target: sink.Addr().String()}}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return s, ln.Addr().String(), sink.Addr().String()
}
