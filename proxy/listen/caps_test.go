package listen

import (
	"net/netip"
	"testing"
	"time"
)

// Two Listeners given one Caps count against it together: the caps hold
// for all their connections, per client key too, and SetLimits on the
// Caps applies to both.
func TestSharedCaps(t *testing.T) {
	checkGoroutines(t)
	caps := NewCaps(3, 2)
	a := newWorld(t, "tcp", "127.0.0.1:0", Config{Caps: caps})
	b := newWorld(t, "tcp", "127.0.0.1:0", Config{Caps: caps})

	// 127.0.0.2 takes one conn on each listener: its key is full on both.
	a.dial("127.0.0.2")
	a.accept()
	b.dial("127.0.0.2")
	b.accept()
	c := a.dial("127.0.0.2")
	assertClosed(t, c)
	eventually(t, 5*time.Second, "per-IP refusal on a", func() bool { return len(a.refusals()) == 1 })
	if r := a.refusals()[0]; r.Kind != KindConnsPerIP || r.Key != netip.MustParsePrefix("127.0.0.2/32") {
		t.Errorf("refusal on a = %+v; want conns_per_ip for 127.0.0.2/32", r)
	}

	// A third client key takes the last of the 3 conns on b; a is full too.
	b.dial("127.0.0.3")
	held := b.accept()
	c = a.dial("127.0.0.4")
	assertClosed(t, c)
	eventually(t, 5*time.Second, "conns refusal on a", func() bool { return len(a.refusals()) == 2 })
	if r := a.refusals()[1]; r.Kind != KindConns {
		t.Errorf("refusal on a = %+v; want conns", r)
	}
	sa, sb := a.l.Stats(), b.l.Stats()
	if sa.Usage != sb.Usage || sa.Conns != 3 || sa.BusiestIP != 2 || sa.BusiestKey != netip.MustParsePrefix("127.0.0.2/32") {
		t.Errorf("Stats: a %+v, b %+v; want the same usage, 3 conns, 2 on 127.0.0.2/32", sa.Usage, sb.Usage)
	}
	if sa.Refused[KindConns] != 1 || sa.Refused[KindConnsPerIP] != 1 || sb.Refused != [numKinds]uint64{} {
		t.Errorf("Refused: a %v, b %v; want a 1 conns and 1 conns_per_ip, b none", sa.Refused, sb.Refused)
	}

	// A conn closed on b makes room on a.
	held.Close()
	eventually(t, 5*time.Second, "release", func() bool { return caps.Usage().Conns == 2 })
	c = a.dial("127.0.0.4")
	a.accept()
	assertOpen(t, c)

	// Raised once, for both.
	caps.SetLimits(4, 3)
	c = b.dial("127.0.0.2")
	b.accept()
	assertOpen(t, c)
	if u := caps.Usage(); u.Conns != 4 || u.MaxConns != 4 || u.MaxConnsPerIP != 3 || u.BusiestIP != 3 {
		t.Errorf("Usage() = %+v; want 4 of 4, 3 of 3 on the busiest key", u)
	}
}

// A Listener without Caps counts its conns and caps none.
func TestNilCaps(t *testing.T) {
	checkGoroutines(t)
	w := newWorld(t, "tcp", "127.0.0.1:0", Config{})
	for range 3 {
		c := w.dial("127.0.0.2")
		w.accept()
		assertOpen(t, c)
	}
	if s := w.l.Stats(); s.Conns != 3 || s.MaxConns != 0 || s.BusiestIP != 3 || len(w.refusals()) != 0 {
		t.Errorf("Stats() = %+v, %d refusals; want 3 uncapped conns, none refused", s, len(w.refusals()))
	}
}
