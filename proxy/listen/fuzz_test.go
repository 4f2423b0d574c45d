package listen

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// fuzzSide is one listener under fuzzing, with its outcomes as channels:
// each connection ends up on exactly one of them.
type fuzzSide struct {
	l        *Listener
	accepted chan net.Conn
	refused  chan Refusal
}

func newFuzzSide(f *testing.F, trusted bool) *fuzzSide {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	s := &fuzzSide{accepted: make(chan net.Conn, 1), refused: make(chan Refusal, 1)}
	cfg := Config{HeaderTimeout: 5 * time.Second, OnRefuse: func(r Refusal) { s.refused <- r }}
	if trusted {
		cfg.ProxyFrom = mustPrefixes(f, "127.0.0.1")
	}
	s.l = New(ln, cfg)
	go func() {
		for {
			c, err := s.l.Accept()
			if err != nil {
				return
			}
			s.accepted <- c
		}
	}()
	f.Cleanup(func() { s.l.Close() })
	return s
}

// FuzzProxyHeader sends arbitrary first bytes from a trusted or an
// untrusted source and checks the verdict against go-proxyproto's parser:
// from an untrusted source the conn always comes through untouched, with
// the socket peer as RemoteAddr; from a trusted one it comes through only
// with a valid header, carrying the header's client, else it is refused.
func FuzzProxyHeader(f *testing.F) {
	v1 := "PROXY TCP4 203.0.113.7 10.0.0.1 40000 3128\r\n"
	v2, _ := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}, &net.TCPAddr{IP: net.ParseIP("2001:db8::2"), Port: 2}).Format()
	local, _ := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	for _, seed := range [][]byte{
		nil, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), []byte(v1), []byte(v1 + "CONNECT a:443 HTTP/1.1\r\n\r\n"),
		[]byte("PROXY UNKNOWN\r\n"), []byte("PROXY TCP4 1.2.3.4"), v2, append(v2, "rest"...), local, v2[:14],
		[]byte("PROXY TCP6 ::1 ::1 1 2\r\n"), []byte("\r\n\r\n\x00\r\nQUIT\n"),
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	sides := map[bool]*fuzzSide{true: newFuzzSide(f, true), false: newFuzzSide(f, false)}

	f.Fuzz(func(t *testing.T, data []byte, trusted bool) {
		if len(data) > 16<<10 {
			t.Skip()
		}
		side := sides[trusted]
		c, err := net.Dial("tcp", side.l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()

		// What go-proxyproto makes of the same bytes, through the same
		// buffer size.
		br := bufio.NewReaderSize(bytes.NewReader(data), headerBufSize)
		h, herr := proxyproto.Read(br)
		valid := herr == nil && h != nil
		var rest []byte // what follows a valid header
		if valid {
			rest, _ = io.ReadAll(br)
		}

		var s net.Conn
		select {
		case s = <-side.accepted:
		case r := <-side.refused:
			if !trusted {
				t.Fatalf("untrusted conn refused: %+v", r)
			}
			if valid {
				t.Fatalf("valid header %+v refused: %v", h, r.Err)
			}
			if r.Kind != KindProxyProtocol || r.Remote.String() != c.LocalAddr().String() {
				t.Fatalf("refusal %+v; want proxy_protocol from %v", r, c.LocalAddr())
			}
			return
		case <-time.After(10 * time.Second):
			t.Fatal("no verdict within 10s")
		}
		defer s.Close()

		via, viaOK := Via(s)
		if !trusted {
			if s.RemoteAddr().String() != c.LocalAddr().String() || viaOK {
				t.Fatalf("untrusted: RemoteAddr %v, Via %v %v; want %v and no Via", s.RemoteAddr(), via, viaOK, c.LocalAddr())
			}
			rest = data
		} else {
			if !valid {
				t.Fatalf("trusted conn without a valid header (%v) accepted, RemoteAddr %v", herr, s.RemoteAddr())
			}
			want := c.LocalAddr().String()
			if src, _, ok := h.TCPAddrs(); ok && h.Command.IsProxy() {
				want = src.String()
			}
			if s.RemoteAddr().String() != want || !viaOK || via.String() != c.LocalAddr().String() {
				t.Fatalf("trusted: RemoteAddr %v, Via %v %v; want %v via %v", s.RemoteAddr(), via, viaOK, want, c.LocalAddr())
			}
		}
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(s)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read the rest: %v", err)
		}
		if !bytes.Equal(got, rest) {
			t.Fatalf("bytes after the header = %q; want %q", got, rest)
		}
	})
}
