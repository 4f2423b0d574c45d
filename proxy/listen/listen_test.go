package listen

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

func TestMaxConns(t *testing.T) {
	checkGoroutines(t)
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{Caps: NewCaps(2, 0)})
	c1, c2 := w.dial(""), w.dial("")
	s1, _ := w.accept(), w.accept()
	assertOpen(t, c1)
	assertOpen(t, c2)

	c3 := w.dial("")
	assertClosed(t, c3)
	eventually(t, 5*time.Second, "refusal of the third conn", func() bool { return len(w.refusals()) == 1 })
	if r := w.refusals()[0]; r.Kind != KindConns || r.Remote.String() != c3.LocalAddr().String() {
		t.Errorf("refusal = %+v; want kind conns from %v", r, c3.LocalAddr())
	}
	if s := w.l.Stats(); s.Conns != 2 || s.MaxConns != 2 || s.Refused[KindConns] != 1 {
		t.Errorf("Stats() = %+v; want 2 of 2 in use, 1 refused", s)
	}

	// Closing one (twice: idempotent) makes room for exactly one more.
	s1.Close()
	s1.Close()
	eventually(t, 5*time.Second, "release", func() bool { return w.l.Stats().Conns == 1 })
	c4 := w.dial("")
	w.accept()
	assertOpen(t, c4)
	if s := w.l.Stats(); s.Conns != 2 {
		t.Errorf("Stats().Conns = %d after re-use; want 2", s.Conns)
	}
}

func TestReleaseToZero(t *testing.T) {
	checkGoroutines(t)
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{Caps: NewCaps(10, 10)})
	var srv []net.Conn
	for range 5 {
		w.dial("127.0.0.1")
		srv = append(srv, w.accept())
	}
	if s := w.l.Stats(); s.Conns != 5 || s.BusiestIP != 5 || s.BusiestKey != netip.MustParsePrefix("127.0.0.1/32") {
		t.Fatalf("Stats() = %+v; want 5 conns, 5 on 127.0.0.1/32", s)
	}
	for _, c := range srv {
		c.Close()
		c.Close()
	}
	if s := w.l.Stats(); s.Conns != 0 || s.BusiestIP != 0 {
		t.Errorf("Stats() after Close = %+v; want 0 in use", s)
	}
}

func TestMaxConnsPerIP(t *testing.T) {
	checkGoroutines(t)
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{Caps: NewCaps(0, 2)})
	a1, a2 := w.dial("127.0.0.2"), w.dial("127.0.0.2")
	w.accept()
	w.accept()
	a3 := w.dial("127.0.0.2")
	assertClosed(t, a3)
	eventually(t, 5*time.Second, "per-IP refusal", func() bool { return len(w.refusals()) == 1 })
	r := w.refusals()[0]
	if r.Kind != KindConnsPerIP || r.Key != netip.MustParsePrefix("127.0.0.2/32") {
		t.Errorf("refusal = %+v; want conns_per_ip for 127.0.0.2/32", r)
	}
	// Other sources are counted on their own.
	for _, src := range []string{"127.0.0.3", "127.0.0.3", "127.0.0.4"} {
		c := w.dial(src)
		s := w.accept()
		if got := s.RemoteAddr().(*net.TCPAddr).IP.String(); got != src {
			t.Errorf("accepted RemoteAddr %v; want %s", s.RemoteAddr(), src)
		}
		assertOpen(t, c)
	}
	assertOpen(t, a1)
	assertOpen(t, a2)
	if s := w.l.Stats(); s.Conns != 5 || s.BusiestIP != 2 || s.Refused[KindConnsPerIP] != 1 {
		t.Errorf("Stats() = %+v; want 5 conns, busiest 2, 1 per-IP refusal", s)
	}
}

func TestMaxConnsPerIPv6Loopback(t *testing.T) {
	if !ipv6Loopback() {
		t.Skip("no IPv6 loopback")
	}
	checkGoroutines(t)
	w := newWorld(t, "tcp6", "[::1]:0", Config{Caps: NewCaps(0, 1)})
	c := w.dial("::1")
	s := w.accept()
	if k := ClientKey(addrIP(s.RemoteAddr())); k != netip.MustParsePrefix("::/64") {
		t.Errorf("key of ::1 = %v; want ::/64", k)
	}
	c2 := w.dial("::1")
	assertClosed(t, c2)
	assertOpen(t, c)
	eventually(t, 5*time.Second, "refusal", func() bool { return len(w.refusals()) == 1 })
	if r := w.refusals()[0]; r.Key != netip.MustParsePrefix("::/64") {
		t.Errorf("refusal key = %v; want ::/64", r.Key)
	}
}

// writeHeader sends a PROXY header for the client src (to dst) on c.
func writeHeader(t testing.TB, c net.Conn, version byte, src, dst string) {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	if _, err := h.WriteTo(c); err != nil {
		t.Fatal(err)
	}
}

func TestProxyProtocolTrusted(t *testing.T) {
	for _, v := range []byte{1, 2} {
		t.Run("v"+string('0'+v), func(t *testing.T) {
			checkGoroutines(t)
			w := newWorld(t, "tcp", "127.0.0.1:0", Config{ProxyFrom: mustPrefixes(t, "127.0.0.5/32"), HeaderTimeout: 5 * time.Second})
			c := w.dial("127.0.0.5")
			// Header and request in one write: the bytes past the header are
			// buffered and must come out of Read first.
			var b strings.Builder
			h := proxyproto.HeaderProxyFromAddrs(v, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}, &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 3128})
			hb, err := h.Format()
			if err != nil {
				t.Fatal(err)
			}
			b.Write(hb)
			b.WriteString("hello")
			io.WriteString(c, b.String())

			s := w.accept()
			if got, want := s.RemoteAddr().String(), "203.0.113.7:40000"; got != want {
				t.Errorf("RemoteAddr() = %s; want %s", got, want)
			}
			via, ok := Via(s)
			if !ok || via.String() != c.LocalAddr().String() {
				t.Errorf("Via() = %v, %v; want %v, true", via, ok, c.LocalAddr())
			}
			got := make([]byte, 5)
			if _, err := io.ReadFull(s, got); err != nil || string(got) != "hello" {
				t.Errorf("read after header = %q, %v; want hello", got, err)
			}
			// Per-IP counts the client from the header, not the balancer.
			if st := w.l.Stats(); st.BusiestKey != netip.MustParsePrefix("203.0.113.7/32") {
				t.Errorf("Stats().BusiestKey = %v; want 203.0.113.7/32", st.BusiestKey)
			}
			// Bytes flow both ways after.
			io.WriteString(s, "back")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got = make([]byte, 4)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "back" {
				t.Errorf("client read = %q, %v; want back", got, err)
			}
		})
	}
}

func TestSyscallConnWhileBuffered(t *testing.T) {
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{ProxyFrom: mustPrefixes(t, "127.0.0.1")})
	c := w.dial("127.0.0.1")
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}, &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 2})
	hb, _ := h.Format()
	c.Write(append(hb, "xy"...))
	s := w.accept()
	sc := s.(syscall.Conn)
	if _, err := sc.SyscallConn(); !errors.Is(err, errBuffered) {
		t.Errorf("SyscallConn() with 2 bytes buffered: err = %v; want errBuffered", err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "xy" {
		t.Fatalf("Read = %q, %v; want xy", got, err)
	}
	if _, err := sc.SyscallConn(); err != nil {
		t.Errorf("SyscallConn() once drained: %v", err)
	}
	if _, ok := s.(interface{ CloseWrite() error }); !ok {
		t.Error("accepted conn has no CloseWrite")
	}
}

func TestProxyProtocolUntrusted(t *testing.T) {
	checkGoroutines(t)
	// Only 127.0.0.5 is trusted; 127.0.0.6's header is just bytes.
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{ProxyFrom: mustPrefixes(t, "127.0.0.5")})
	c := w.dial("127.0.0.6")
	writeHeader(t, c, 1, "203.0.113.9:1234", "10.0.0.1:3128")
	s := w.accept()
	if got, want := s.RemoteAddr().String(), c.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr() = %s; want the socket peer %s", got, want)
	}
	if via, ok := Via(s); ok {
		t.Errorf("Via() = %v, true; want false", via)
	}
	line, err := bufio.NewReader(s).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "PROXY TCP4 203.0.113.9 ") {
		t.Errorf("first line = %q, %v; want the PROXY header verbatim", line, err)
	}
}

// TestHTTPServer: behind http.Server, a trusted header sets the request's
// RemoteAddr, and an untrusted one is a bad request.
func TestHTTPServer(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, Config{ProxyFrom: mustPrefixes(t, "127.0.0.5")})
	remotes := make(chan string, 2)
	hs := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { remotes <- r.RemoteAddr }),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() { hs.Serve(l); close(done) }()
	t.Cleanup(func() { hs.Close(); <-done })

	get := func(src string) (int, string) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "PROXY TCP4 203.0.113.9 10.0.0.1 1234 3128\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		select {
		case r := <-remotes:
			return resp.StatusCode, r
		default:
			return resp.StatusCode, ""
		}
	}
	if code, remote := get("127.0.0.5"); code != http.StatusOK || remote != "203.0.113.9:1234" {
		t.Errorf("trusted: status %d, RemoteAddr %q; want 200, 203.0.113.9:1234", code, remote)
	}
	if code, remote := get("127.0.0.6"); code != http.StatusBadRequest || remote != "" {
		t.Errorf("untrusted: status %d, handler saw %q; want 400 and no handler call", code, remote)
	}
}

func TestProxyProtocolTrustedWithoutHeader(t *testing.T) {
	checkGoroutines(t)
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{ProxyFrom: mustPrefixes(t, "127.0.0.0/24"), HeaderTimeout: 5 * time.Second})
	c := w.dial("127.0.0.7")
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	assertClosed(t, c)
	eventually(t, 5*time.Second, "refusal", func() bool { return len(w.refusals()) == 1 })
	r := w.refusals()[0]
	if r.Kind != KindProxyProtocol || !errors.Is(r.Err, ErrNoHeader) || r.Remote.String() != c.LocalAddr().String() {
		t.Errorf("refusal = %+v; want proxy_protocol_refused, ErrNoHeader, from %v", r, c.LocalAddr())
	}
	if s := w.l.Stats(); s.Conns != 0 || s.Refused[KindProxyProtocol] != 1 {
		t.Errorf("Stats() = %+v; want 0 in use, 1 proxy_protocol refusal", s)
	}
	// A malformed header is refused the same way.
	c2 := w.dial("127.0.0.7")
	io.WriteString(c2, "PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n")
	assertClosed(t, c2)
	// So is a partial one: go-proxyproto wants a v1 line whole, and a v2
	// header that stops short waits for the timeout.
	c3 := w.dial("127.0.0.7")
	io.WriteString(c3, "PROXY TCP4 ")
	assertClosed(t, c3)
	eventually(t, 5*time.Second, "three refusals", func() bool { return w.l.Stats().Refused[KindProxyProtocol] == 3 })
}

func TestProxyProtocolSlowHeader(t *testing.T) {
	checkGoroutines(t)
	const timeout = 200 * time.Millisecond
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{ProxyFrom: mustPrefixes(t, "127.0.0.8"), HeaderTimeout: timeout})
	slow := w.dial("127.0.0.8") // sends nothing
	start := time.Now()

	// Accept is not held up by it: a direct client and a good trusted one
	// get through meanwhile.
	w.dial("127.0.0.9")
	if s := w.accept(); !strings.HasPrefix(s.RemoteAddr().String(), "127.0.0.9:") {
		t.Errorf("accepted %v; want the direct client", s.RemoteAddr())
	}
	good := w.dial("127.0.0.8")
	writeHeader(t, good, 2, "198.51.100.1:5", "10.0.0.1:3128")
	if s := w.accept(); s.RemoteAddr().String() != "198.51.100.1:5" {
		t.Errorf("accepted %v; want 198.51.100.1:5", s.RemoteAddr())
	}
	if p := w.l.Stats().HeaderPending; p != 1 && time.Since(start) < timeout {
		t.Errorf("HeaderPending = %d; want 1", p)
	}

	assertClosed(t, slow)
	if el := time.Since(start); el < timeout {
		t.Errorf("slow conn closed after %v; want >= the header timeout %v", el, timeout)
	}
	eventually(t, 5*time.Second, "refusal", func() bool { return w.l.Stats().Refused[KindProxyProtocol] == 1 })
	if s := w.l.Stats(); s.Conns != 2 || s.HeaderPending != 0 {
		t.Errorf("Stats() = %+v; want 2 in use, none pending", s)
	}
}

// TestProxyProtocolPerIPv6: the per-IP cap counts the client from the
// header, by /64.
func TestProxyProtocolPerIPv6(t *testing.T) {
	checkGoroutines(t)
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{ProxyFrom: mustPrefixes(t, "127.0.0.10"), Caps: NewCaps(0, 1)})
	c1 := w.dial("127.0.0.10")
	writeHeader(t, c1, 2, "[2001:db8:1:2::1]:1000", "[2001:db8::ff]:3128")
	w.accept()
	// Same /64, other address: refused.
	c2 := w.dial("127.0.0.10")
	writeHeader(t, c2, 1, "[2001:db8:1:2:ffff::9]:1001", "[2001:db8::ff]:3128")
	assertClosed(t, c2)
	// Another /64 from the same balancer: accepted.
	c3 := w.dial("127.0.0.10")
	writeHeader(t, c3, 2, "[2001:db8:1:3::1]:1002", "[2001:db8::ff]:3128")
	w.accept()
	assertOpen(t, c1)
	assertOpen(t, c3)
	eventually(t, 5*time.Second, "refusal", func() bool { return len(w.refusals()) == 1 })
	r := w.refusals()[0]
	if r.Kind != KindConnsPerIP || r.Key != netip.MustParsePrefix("2001:db8:1:2::/64") || r.Remote.String() != "[2001:db8:1:2:ffff::9]:1001" {
		t.Errorf("refusal = %+v; want conns_per_ip, key 2001:db8:1:2::/64", r)
	}
	if r.Via == nil || r.Via.String() != c2.LocalAddr().String() {
		t.Errorf("refusal Via = %v; want %v", r.Via, c2.LocalAddr())
	}
}

// TestProxyProtocolLocal: a LOCAL header (the balancer's own health check)
// is accepted with the balancer as the client.
func TestProxyProtocolLocal(t *testing.T) {
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{ProxyFrom: mustPrefixes(t, "127.0.0.11")})
	c := w.dial("127.0.0.11")
	h := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	if _, err := h.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	s := w.accept()
	if got, want := s.RemoteAddr().String(), c.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr() = %s; want the balancer %s", got, want)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	checkGoroutines(t)
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{ProxyFrom: mustPrefixes(t, "127.0.0.12"), HeaderTimeout: time.Minute})
	pending := w.dial("127.0.0.12") // its header never comes
	w.dial("127.0.0.13")            // accepted, never taken by Accept
	eventually(t, 5*time.Second, "both counted", func() bool { return w.l.Stats().Conns == 2 })
	if err := w.l.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	assertClosed(t, pending)
	if _, err := w.l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v; want net.ErrClosed", err)
	}
	if s := w.l.Stats(); s.Conns != 0 {
		t.Errorf("Stats().Conns after Close = %d; want 0", s.Conns)
	}
}

func TestVia(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := Via(a); ok {
		t.Error("Via(net.Pipe conn) ok; want false")
	}
	via := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}
	c := &conn{Conn: a, via: via}
	if got, ok := Via(wrapped{c}); !ok || got != via {
		t.Errorf("Via(wrapped) = %v, %v; want %v, true", got, ok, via)
	}
}

type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }
