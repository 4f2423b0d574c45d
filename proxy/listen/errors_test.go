package listen

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// flakyListener fails its first Accept with a temporary error, as a
// listener out of fds (EMFILE) does.
type flakyListener struct {
	net.Listener
	failed atomic.Bool
}

type tempErr struct{}

func (tempErr) Error() string   { return "accept: too many open files" }
func (tempErr) Timeout() bool   { return false }
func (tempErr) Temporary() bool { return true }

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.failed.CompareAndSwap(false, true) {
		return nil, tempErr{}
	}
	return f.Listener.Accept()
}

// TestTemporaryErrorPassedOn: a temporary accept error reaches Accept (so
// http.Server backs off as usual) and the Listener goes on.
func TestTemporaryErrorPassedOn(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(&flakyListener{Listener: ln}, Config{})
	defer l.Close()
	if _, err := l.Accept(); !errors.As(err, new(tempErr)) {
		t.Fatalf("first Accept = %v; want the temporary error", err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept after a temporary error: %v", err)
	}
	s.Close()
}

// TestInnerListenerClosed: when the wrapped listener is closed by someone
// else, Accept reports its error and the Listener's goroutines end.
func TestInnerListenerClosed(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, Config{ProxyFrom: mustPrefixes(t, "127.0.0.1"), HeaderTimeout: time.Minute})
	pending, err := net.Dial("tcp", ln.Addr().String()) // trusted, sends nothing
	if err != nil {
		t.Fatal(err)
	}
	defer pending.Close()
	eventually(t, 5*time.Second, "header read pending", func() bool { return l.Stats().HeaderPending == 1 })
	ln.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept = %v; want net.ErrClosed", err)
	}
	assertClosed(t, pending)
	l.Close()
}

// TestRefusalsLeakNoFDs: a burst of refused conns leaves the process's fd
// count where it was.
func TestRefusalsLeakNoFDs(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd")
	}
	checkGoroutines(t)
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{Caps: NewCaps(1, 0), ProxyFrom: mustPrefixes(t, "127.0.0.20")})
	w.dial("")
	w.accept()
	base := openFDs(t)
	for range 50 {
		c, err := net.Dial("tcp", w.l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		assertClosed(t, c)
		c.Close()
	}
	eventually(t, 5*time.Second, "50 refusals", func() bool { return w.l.Stats().Refused[KindConns] == 50 })
	eventually(t, 5*time.Second, "fds back to baseline", func() bool { return openFDs(t) <= base })
}

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
