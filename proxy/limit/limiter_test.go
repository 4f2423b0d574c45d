package limit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// waitUntil polls cond until it holds, failing the test after a
// deadline. The limiter has no event to wait on for "queued", so tests
// observe it through Waiting.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}

// mustAcquire acquires without waiting and fails the test on refusal.
func mustAcquire(t *testing.T, l *Limiter, k Key) *Slot {
	t.Helper()
	s, err := l.Acquire(t.Context(), k, 0)
	if err != nil {
		t.Fatalf("Acquire(%+v) = %v; want a slot", k, err)
	}
	return s
}

// wantRefused checks that k is refused now, by kind with limit.
func wantRefused(t *testing.T, l *Limiter, k Key, kind Kind, limit int) {
	t.Helper()
	s, err := l.Acquire(t.Context(), k, 0)
	var le *Error
	if !errors.As(err, &le) {
		s.Release()
		t.Fatalf("Acquire(%+v) = %v; want *Error", k, err)
	}
	if le.Kind != kind || le.Limit != limit || le.Waited != 0 {
		t.Fatalf("Acquire(%+v) refused with %+v; want kind %v limit %d, no wait", k, *le, kind, limit)
	}
}

// queued starts Acquire(k, wait) in a goroutine, waits until the
// limiter shows it queued (Waiting reaches want), and returns channels
// for its outcome.
func queued(t *testing.T, ctx context.Context, l *Limiter, k Key, want int) (<-chan *Slot, <-chan error) {
	t.Helper()
	slots, errs := make(chan *Slot, 1), make(chan error, 1)
	go func() {
		s, err := l.Acquire(ctx, k, time.Minute)
		if err != nil {
			errs <- err
			return
		}
		slots <- s
	}()
	waitUntil(t, fmt.Sprintf("%d waiters", want), func() bool { return l.Waiting() == want })
	return slots, errs
}

func recv(t *testing.T, slots <-chan *Slot, errs <-chan error) *Slot {
	t.Helper()
	select {
	case s := <-slots:
		return s
	case err := <-errs:
		t.Fatalf("queued Acquire failed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("queued Acquire was not served")
	}
	return nil
}

func notServed(t *testing.T, slots <-chan *Slot) {
	t.Helper()
	select {
	case s := <-slots:
		s.Release()
		t.Fatal("a waiter was served though its limit is still full")
	default:
	}
}

// checkEmpty checks that no slot, waiter or map entry is left.
func checkEmpty(t *testing.T, l *Limiter) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.global != 0 || len(l.users) != 0 || len(l.ips) != 0 || len(l.hosts) != 0 || l.nwait != 0 || l.head != nil || l.tail != nil {
		t.Fatalf("limiter not empty: global=%d users=%v ips=%v hosts=%v waiters=%d", l.global, l.users, l.ips, l.hosts, l.nwait)
	}
}

// storeMax raises a to n if n is larger.
func storeMax(a *atomic.Int64, n int64) {
	for p := a.Load(); n > p; p = a.Load() {
		if a.CompareAndSwap(p, n) {
			return
		}
	}
}

func TestLimiterConcurrentGlobal(t *testing.T) {
	const limit, workers, rounds = 10, 100, 50
	l := New(Config{Global: limit})
	var held, peak, served, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			wait := time.Minute
			if i%2 == 1 {
				wait = 0 // half never queue: exercises refusals too
			}
			k := Key{User: fmt.Sprintf("u%d", i%7), ClientIP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i % 5)}), Host: fmt.Sprintf("h%d", i%3)}
			for range rounds {
				s, err := l.Acquire(t.Context(), k, wait)
				if err != nil {
					var le *Error
					if !errors.As(err, &le) || le.Kind != KindGlobal || le.Limit != limit {
						t.Errorf("Acquire = %v; want a global Error", err)
						return
					}
					refused.Add(1)
					continue
				}
				served.Add(1)
				storeMax(&peak, held.Add(1))
				runtime.Gosched() // let others run while this slot is held
				held.Add(-1)
				// Two concurrent Releases: only one may count.
				var rel sync.WaitGroup
				rel.Go(s.Release)
				rel.Go(s.Release)
				rel.Wait()
				s.Release()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > limit {
		t.Errorf("peak slots held = %d; want <= %d", p, limit)
	}
	if got := served.Load() + refused.Load(); got != workers*rounds {
		t.Errorf("served+refused = %d; want %d", got, workers*rounds)
	}
	if served.Load() < workers/2*rounds {
		t.Errorf("served = %d; want at least every queued request (%d)", served.Load(), workers/2*rounds)
	}
	checkEmpty(t, l)
}

func TestLimiterConcurrentPerKey(t *testing.T) {
	const perUser, users, workers, rounds = 3, 5, 100, 30
	l := New(Config{Global: 12, PerUser: perUser, PerHost: 4})
	var mu sync.Mutex
	heldUser := map[string]int{}
	heldHost := map[string]int{}
	heldAll := 0
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			k := Key{User: fmt.Sprintf("u%d", i%users), Host: fmt.Sprintf("h%d", i%4)}
			for range rounds {
				s, err := l.Acquire(t.Context(), k, time.Minute)
				if err != nil {
					t.Errorf("Acquire(%+v) = %v", k, err)
					return
				}
				mu.Lock()
				heldUser[k.User]++
				heldHost[k.Host]++
				heldAll++
				if heldUser[k.User] > perUser || heldHost[k.Host] > 4 || heldAll > 12 {
					t.Errorf("held user=%d host=%d all=%d; limits 3, 4, 12", heldUser[k.User], heldHost[k.Host], heldAll)
				}
				mu.Unlock()
				mu.Lock()
				heldUser[k.User]--
				heldHost[k.Host]--
				heldAll--
				mu.Unlock()
				s.Release()
			}
		})
	}
	wg.Wait()
	checkEmpty(t, l)
}

func TestLimiterKinds(t *testing.T) {
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tests := []struct {
		name   string
		lim    Config
		same   Key  // used up to the limit
		alias  Key  // the same key written differently: must share the count
		other  *Key // if set, a different key: unaffected
		kind   Kind
		limit  int
		exempt *Key // if set, a key with no slot of this kind: never limited by it
	}{
		{
			name: "global", lim: Config{Global: 2},
			same: Key{User: "a"}, alias: Key{User: "b"}, kind: KindGlobal, limit: 2,
		},
		{
			name: "user", lim: Config{PerUser: 2},
			same: Key{User: "alice"}, alias: Key{User: "alice", Groups: []string{"x"}}, other: &Key{User: "bob"},
			kind: KindUser, limit: 2, exempt: &Key{ClientIP: ip("192.0.2.9")},
		},
		{
			name: "client ip", lim: Config{PerIP: 2},
			same: Key{ClientIP: ip("192.0.2.1")}, alias: Key{ClientIP: ip("::ffff:192.0.2.1")}, other: &Key{ClientIP: ip("192.0.2.2")},
			kind: KindClientIP, limit: 2, exempt: &Key{User: "alice"},
		},
		{
			name: "client ip zone", lim: Config{PerIP: 1},
			same: Key{ClientIP: ip("fe80::1%eth0")}, alias: Key{ClientIP: ip("fe80::1")}, other: &Key{ClientIP: ip("fe80:0:0:1::1")},
			kind: KindClientIP, limit: 1, exempt: &Key{},
		},
		{
			// One IPv6 host usually holds a whole /64: it is one client.
			name: "client ip v6 /64", lim: Config{PerIP: 2},
			same: Key{ClientIP: ip("2001:db8:1:2::1")}, alias: Key{ClientIP: ip("2001:db8:1:2:ffff:ffff:ffff:ffff")}, other: &Key{ClientIP: ip("2001:db8:1:3::1")},
			kind: KindClientIP, limit: 2, exempt: &Key{},
		},
		{
			name: "host", lim: Config{PerHost: 3},
			same: Key{Host: "example.com"}, alias: Key{Host: "example.com", User: "z"}, other: &Key{Host: "example.org"},
			kind: KindHost, limit: 3, exempt: &Key{User: "x"},
		},
		{
			// Global is checked first, so it is the one named.
			name: "order global first", lim: Config{Global: 1, PerUser: 1, PerIP: 1, PerHost: 1},
			same: Key{User: "a", ClientIP: ip("192.0.2.1"), Host: "h"}, alias: Key{User: "a", ClientIP: ip("192.0.2.1"), Host: "h"},
			kind: KindGlobal, limit: 1,
		},
		{
			name: "order user before ip and host", lim: Config{PerUser: 1, PerIP: 1, PerHost: 1},
			same: Key{User: "a", ClientIP: ip("192.0.2.1"), Host: "h"}, alias: Key{User: "a", ClientIP: ip("192.0.2.1"), Host: "h"},
			other: &Key{User: "b", ClientIP: ip("192.0.2.2"), Host: "g"}, kind: KindUser, limit: 1,
		},
		{
			name: "order ip before host", lim: Config{PerIP: 1, PerHost: 1},
			same: Key{ClientIP: ip("192.0.2.1"), Host: "h"}, alias: Key{ClientIP: ip("192.0.2.1"), Host: "h"},
			other: &Key{ClientIP: ip("192.0.2.2"), Host: "g"}, kind: KindClientIP, limit: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.lim)
			var held []*Slot
			for range tt.limit - 1 {
				held = append(held, mustAcquire(t, l, tt.same))
			}
			held = append(held, mustAcquire(t, l, tt.alias))
			wantRefused(t, l, tt.same, tt.kind, tt.limit)
			wantRefused(t, l, tt.alias, tt.kind, tt.limit)
			if tt.other != nil {
				held = append(held, mustAcquire(t, l, *tt.other))
			}
			if tt.exempt != nil {
				for range 5 {
					held = append(held, mustAcquire(t, l, *tt.exempt))
				}
			}
			held[0].Release()
			s := mustAcquire(t, l, tt.same)
			wantRefused(t, l, tt.same, tt.kind, tt.limit)
			s.Release()
			for _, s := range held {
				s.Release()
			}
			checkEmpty(t, l)
		})
	}
}

func TestLimiterUserOverrides(t *testing.T) {
	lim := Config{
		PerUser: 2,
		Users:   map[string]int{"vip": 5, "free": 0, "small": 1},
		Groups:  map[string]int{"ops": 4, "dev": 3, "batch": 0},
	}
	tests := []struct {
		user   string
		groups []string
		want   int // 0: unlimited
	}{
		{"plain", nil, 2},
		{"plain", []string{"unknown"}, 2},
		{"dev1", []string{"dev"}, 3},
		{"both", []string{"dev", "ops"}, 4},
		{"both2", []string{"ops", "dev"}, 4},
		{"batcher", []string{"dev", "batch"}, 0},
		{"vip", []string{"dev"}, 5},
		{"small", []string{"ops"}, 1}, // user override wins even when lower
		{"free", []string{"dev"}, 0},
		{"", []string{"ops"}, 0}, // anonymous: no per-user cap
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s%v", tt.user, tt.groups), func(t *testing.T) {
			if got := lim.userLimit(tt.user, tt.groups); got != tt.want {
				t.Fatalf("userLimit(%q, %v) = %d; want %d", tt.user, tt.groups, got, tt.want)
			}
			l := New(lim)
			k := Key{User: tt.user, Groups: tt.groups}
			n := tt.want
			if n == 0 {
				n = 20 // unlimited: more than any cap above
			}
			var held []*Slot
			for range n {
				held = append(held, mustAcquire(t, l, k))
			}
			if tt.want > 0 {
				wantRefused(t, l, k, KindUser, tt.want)
			}
			for _, s := range held {
				s.Release()
			}
			checkEmpty(t, l)
		})
	}
	// New copies the maps: the caller may reuse them.
	l := New(lim)
	lim.Users["vip"] = 1
	if got := l.lim.userLimit("vip", nil); got != 5 {
		t.Errorf("after the caller changed its map, vip limit = %d; want 5", got)
	}
}

func TestLimiterFIFO(t *testing.T) {
	const n = 6
	l := New(Config{Global: 1})
	first := mustAcquire(t, l, Key{})
	type served struct {
		id int
		s  *Slot
	}
	order := make(chan served, n)
	for i := range n {
		go func() {
			s, err := l.Acquire(t.Context(), Key{User: fmt.Sprintf("w%d", i)}, time.Minute)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- served{i, s}
		}()
		// Queue one at a time so arrival order is known.
		waitUntil(t, fmt.Sprintf("waiter %d queued", i), func() bool { return l.Waiting() == i+1 })
	}
	wantRefused(t, l, Key{}, KindGlobal, 1) // a newcomer with no patience does not jump the queue
	first.Release()
	for want := range n {
		select {
		case got := <-order:
			if got.id != want {
				t.Fatalf("served waiter %d; want %d (arrival order)", got.id, want)
			}
			if got.s.Waited() <= 0 {
				t.Errorf("waiter %d: Waited() = %v; want > 0", got.id, got.s.Waited())
			}
			if w := l.Waiting(); w != n-want-1 {
				t.Errorf("Waiting() = %d after serving waiter %d; want %d", w, want, n-want-1)
			}
			got.s.Release()
		case <-time.After(10 * time.Second):
			t.Fatalf("waiter %d not served", want)
		}
	}
	checkEmpty(t, l)
}

// Waiters held back by different keys are served independently: a full
// host does not stall waiters that only need the global pool.
func TestLimiterIndependentKeys(t *testing.T) {
	l := New(Config{Global: 3, PerHost: 1})
	a := mustAcquire(t, l, Key{Host: "a"})
	b := mustAcquire(t, l, Key{Host: "b"})
	waitA, errA := queued(t, t.Context(), l, Key{Host: "a"}, 1)
	waitB, errB := queued(t, t.Context(), l, Key{Host: "b"}, 2)

	// Global has room and host c is free: served at once, past the queue.
	c := mustAcquire(t, l, Key{Host: "c"})
	// Now global is full too; d queues behind a and b.
	waitD, errD := queued(t, t.Context(), l, Key{Host: "d"}, 3)

	// Freeing b's host slot frees a global slot as well: b is the oldest
	// waiter that fits (a's host is still full), so b gets it, not d.
	b.Release()
	if got := l.Waiting(); got != 2 {
		t.Fatalf("Waiting() = %d after b's release; want 2 (a, d)", got)
	}
	b2 := recv(t, waitB, errB)
	notServed(t, waitA)
	notServed(t, waitD)

	// c's release frees only a global slot: a still lacks its host, so d,
	// though newer, is served.
	c.Release()
	if got := l.Waiting(); got != 1 {
		t.Fatalf("Waiting() = %d after c's release; want 1 (a)", got)
	}
	d := recv(t, waitD, errD)
	notServed(t, waitA)
	if got := l.Waiting(); got != 1 {
		t.Fatalf("Waiting() = %d; want 1 (a)", got)
	}
	d.Release()
	notServed(t, waitA)
	a.Release()
	a2 := recv(t, waitA, errA)
	a2.Release()
	b2.Release()
	checkEmpty(t, l)
}

func TestLimiterWaitTimeout(t *testing.T) {
	// synctest's fake clock makes the waited time exact and the test instant.
	synctest.Test(t, func(t *testing.T) {
		l := New(Config{Global: 1, PerHost: 1})
		held := mustAcquire(t, l, Key{Host: "h"})

		_, err := l.Acquire(t.Context(), Key{Host: "h"}, 2*time.Second)
		var le *Error
		if !errors.As(err, &le) || !errors.Is(err, ErrExceeded) {
			t.Fatalf("Acquire after timeout = %v; want *Error wrapping ErrExceeded", err)
		}
		if le.Kind != KindGlobal || le.Limit != 1 || le.Waited != 2*time.Second {
			t.Errorf("Error = %+v; want global limit 1 waited 2s", *le)
		}
		if l.Waiting() != 0 {
			t.Errorf("Waiting() = %d after timeout; want 0", l.Waiting())
		}

		// A slot freed within the wait serves the waiter.
		time.AfterFunc(1500*time.Millisecond, held.Release)
		s, err := l.Acquire(t.Context(), Key{Host: "h"}, 2*time.Second)
		if err != nil {
			t.Fatalf("Acquire with a slot freed after 1.5s of 2s = %v; want a slot", err)
		}
		if s.Waited() != 1500*time.Millisecond {
			t.Errorf("Waited() = %v; want 1.5s", s.Waited())
		}

		// The kind reported is the one full at the deadline.
		l.SetLimits(Config{Global: 5, PerHost: 1})
		_, err = l.Acquire(t.Context(), Key{Host: "h"}, time.Second)
		if !errors.As(err, &le) || le.Kind != KindHost || le.Limit != 1 || le.Waited != time.Second {
			t.Errorf("Acquire = %v; want host limit 1 after waiting 1s", err)
		}
		s.Release()
		checkEmpty(t, l)
	})
}

func TestLimiterCancelWhileQueued(t *testing.T) {
	l := New(Config{Global: 1})
	held := mustAcquire(t, l, Key{})

	ctx, cancel := context.WithCancel(t.Context())
	_, errs1 := queued(t, ctx, l, Key{User: "gone"}, 1)
	waiting2, errs2 := queued(t, t.Context(), l, Key{User: "stays"}, 2)

	cancel() // the client hung up: its place is freed at once
	select {
	case err := <-errs1:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Acquire = %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled Acquire did not return")
	}
	if got := l.Waiting(); got != 1 {
		t.Fatalf("Waiting() = %d after cancel; want 1", got)
	}
	held.Release()
	s := recv(t, waiting2, errs2)
	s.Release()

	// A context already done is not queued at all.
	held = mustAcquire(t, l, Key{})
	if _, err := l.Acquire(ctx, Key{}, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled ctx on a full pool = %v; want context.Canceled", err)
	}
	held.Release()
	checkEmpty(t, l)
}

func TestLimiterSetLimits(t *testing.T) {
	t.Run("lowering keeps held slots", func(t *testing.T) {
		l := New(Config{Global: 3})
		held := []*Slot{mustAcquire(t, l, Key{}), mustAcquire(t, l, Key{}), mustAcquire(t, l, Key{})}
		l.SetLimits(Config{Global: 1})
		if u := l.Usage()[KindGlobal]; u.InUse != 3 || u.Capacity != 1 {
			t.Fatalf("Usage after lowering = %+v; want 3 in use, capacity 1", u)
		}
		for _, s := range held {
			wantRefused(t, l, Key{}, KindGlobal, 1)
			s.Release()
		}
		s := mustAcquire(t, l, Key{})
		wantRefused(t, l, Key{}, KindGlobal, 1)
		s.Release()
		checkEmpty(t, l)
	})
	t.Run("unlimited to limited counts existing tunnels", func(t *testing.T) {
		l := New(Config{})
		k := Key{User: "u", ClientIP: netip.MustParseAddr("192.0.2.7"), Host: "h"}
		var held []*Slot
		for range 4 {
			held = append(held, mustAcquire(t, l, k))
		}
		l.SetLimits(Config{PerHost: 2})
		wantRefused(t, l, k, KindHost, 2)
		held[0].Release()
		held[1].Release()
		wantRefused(t, l, k, KindHost, 2)
		held[2].Release()
		held = append(held, mustAcquire(t, l, k))
		wantRefused(t, l, k, KindHost, 2)
		for _, s := range held[3:] {
			s.Release()
		}
		checkEmpty(t, l)
	})
	t.Run("raising serves waiters", func(t *testing.T) {
		l := New(Config{Global: 1})
		held := mustAcquire(t, l, Key{})
		w1, e1 := queued(t, t.Context(), l, Key{}, 1)
		w2, e2 := queued(t, t.Context(), l, Key{}, 2)
		w3, e3 := queued(t, t.Context(), l, Key{}, 3)
		l.SetLimits(Config{Global: 3})
		if got := l.Waiting(); got != 1 {
			t.Fatalf("Waiting() = %d after raising 1 -> 3 with 3 queued; want 1", got)
		}
		s1, s2 := recv(t, w1, e1), recv(t, w2, e2)
		notServed(t, w3)
		s1.Release()
		s3 := recv(t, w3, e3)
		for _, s := range []*Slot{held, s2, s3} {
			s.Release()
		}
		checkEmpty(t, l)
	})
	t.Run("new user override serves a queued user", func(t *testing.T) {
		l := New(Config{PerUser: 1})
		k := Key{User: "alice", Groups: []string{"ops"}}
		held := mustAcquire(t, l, k)
		w, e := queued(t, t.Context(), l, k, 1)
		l.SetLimits(Config{PerUser: 1, Groups: map[string]int{"ops": 2}})
		s := recv(t, w, e)
		wantRefused(t, l, k, KindUser, 2)
		held.Release()
		s.Release()
		checkEmpty(t, l)
	})
}

func TestLimiterUsage(t *testing.T) {
	l := New(Config{Global: 20, PerUser: 2, PerHost: 8, Users: map[string]int{"big": 10}})
	if got, want := l.Usage(), []Usage{
		{Kind: KindGlobal, Capacity: 20}, {Kind: KindUser, Capacity: 2}, {Kind: KindClientIP}, {Kind: KindHost, Capacity: 8},
	}; !slices.Equal(got, want) {
		t.Fatalf("idle Usage() = %v; want %v", got, want)
	}
	take := func(k Key, n int) (s []*Slot) {
		for range n {
			s = append(s, mustAcquire(t, l, k))
		}
		return s
	}
	ip1, ip2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	alice := take(Key{User: "alice", ClientIP: ip1, Host: "h1"}, 1) // 1/2
	big := take(Key{User: "big", ClientIP: ip1, Host: "h2"}, 5)     // 5/10
	bob := take(Key{User: "bob", ClientIP: ip2, Host: "h2"}, 2)     // 2/2: most saturated
	w, e := queued(t, t.Context(), l, Key{User: "bob", Host: "h2"}, 1)

	u := l.Usage()
	want := []Usage{
		{Kind: KindGlobal, InUse: 8, Capacity: 20},
		{Kind: KindUser, InUse: 2, Capacity: 2, Waiting: 1},
		{Kind: KindClientIP, InUse: 6, Capacity: 0}, // uncapped: the busiest IP
		{Kind: KindHost, InUse: 7, Capacity: 8},
	}
	if !slices.Equal(u, want) {
		t.Fatalf("Usage() = %v; want %v", u, want)
	}
	bob[0].Release()
	s := recv(t, w, e)
	bob[1].Release()
	s.Release()
	// alice 1/2 and big 5/10 tie: the busier key is reported.
	if got := l.Usage()[KindUser]; got.InUse != 5 || got.Capacity != 10 {
		t.Errorf("user Usage with a tie = %+v; want 5/10", got)
	}
	for _, s := range append(alice, big...) {
		s.Release()
	}
	checkEmpty(t, l)
}

func TestLimiterNil(t *testing.T) {
	var l *Limiter
	s, err := l.Acquire(t.Context(), Key{User: "u"}, time.Second)
	if s != nil || err != nil {
		t.Fatalf("nil Limiter Acquire = %v, %v; want nil, nil", s, err)
	}
	s.Release()
	s.Release()
	if s.Waited() != 0 || l.Waiting() != 0 || l.Full() {
		t.Error("nil Limiter/Slot should report nothing")
	}
	l.SetLimits(Config{Global: 1})
	if u := l.Usage(); len(u) != 4 || u[KindHost].Kind != KindHost {
		t.Errorf("nil Limiter Usage() = %v; want 4 zero entries", u)
	}
}

func TestLimiterFull(t *testing.T) {
	l := New(Config{Global: 1, PerUser: 1})
	if l.Full() {
		t.Fatal("empty limiter reports Full")
	}
	s := mustAcquire(t, l, Key{User: "u"})
	if !l.Full() {
		t.Error("limiter at its global limit does not report Full")
	}
	s.Release()
	l.SetLimits(Config{PerUser: 1})
	s = mustAcquire(t, l, Key{User: "u"})
	if l.Full() {
		t.Error("a full user is not a full pool")
	}
	s.Release()
}

func TestLimiterError(t *testing.T) {
	var err error = &Error{Kind: KindClientIP, Limit: 4}
	wrapped := fmt.Errorf("connect example.com:443: %w", err)
	if !errors.Is(wrapped, ErrExceeded) {
		t.Error("errors.Is(wrapped Error, ErrExceeded) = false")
	}
	var le *Error
	if !errors.As(wrapped, &le) || le.Kind != KindClientIP {
		t.Error("errors.As did not find the Error")
	}
	for _, tt := range []struct {
		err  *Error
		want string
	}{
		{&Error{Kind: KindClientIP, Limit: 4}, "tunnel limit reached: client_ip limit 4"},
		{&Error{Kind: KindUser, Limit: 2, Waited: 1500 * time.Millisecond}, "tunnel limit reached: user limit 2 (waited 1.5s)"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
	names := map[Kind]string{KindGlobal: "global", KindUser: "user", KindClientIP: "client_ip", KindHost: "host", KindPending: "pending", 9: "Kind(9)", -1: "Kind(-1)"}
	for k, want := range names {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q; want %q", int(k), got, want)
		}
	}
}

func TestLimiterLimitsValidate(t *testing.T) {
	if err := (Config{Users: map[string]int{"a": 0, "b": 3}, Groups: map[string]int{"g": 1}}).Validate(); err != nil {
		t.Errorf("Validate(good) = %v; want nil", err)
	}
	err := (Config{Users: map[string]int{"a": -1}, Groups: map[string]int{"": 2}}).Validate()
	if err == nil {
		t.Fatal("Validate(bad) = nil; want errors")
	}
	for _, want := range []string{`user "a" is -1`, "empty group name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not mention %q", err, want)
		}
	}
}

func TestGate(t *testing.T) {
	if NewGate(0) != nil || NewGate(-3) != nil {
		t.Fatal("NewGate(n <= 0) should be nil (unlimited)")
	}
	var nilGate *Gate
	if !nilGate.TryEnter() || nilGate.InUse() != 0 || nilGate.Limit() != 0 {
		t.Error("nil Gate should admit everything and count nothing")
	}
	nilGate.Leave()
	nilGate.SetLimit(3)
	if u := nilGate.Usage(); u != (Usage{Kind: KindPending}) {
		t.Errorf("nil Gate Usage() = %+v", u)
	}

	g := NewGate(2)
	if !g.TryEnter() || !g.TryEnter() {
		t.Fatal("Gate(2) refused one of the first two")
	}
	if g.TryEnter() {
		t.Fatal("Gate(2) admitted a third")
	}
	if u := g.Usage(); u != (Usage{Kind: KindPending, InUse: 2, Capacity: 2}) {
		t.Errorf("Usage() = %+v; want 2/2 pending", u)
	}
	g.SetLimit(1) // lowering keeps both
	if g.InUse() != 2 || g.TryEnter() {
		t.Fatal("lowered Gate dropped holders or admitted a new one")
	}
	g.Leave()
	if g.TryEnter() {
		t.Fatal("Gate at its lowered limit admitted one")
	}
	g.Leave()
	if !g.TryEnter() {
		t.Fatal("Gate below its limit refused")
	}
	g.Leave()
	g.SetLimit(0)
	for range 100 {
		if !g.TryEnter() {
			t.Fatal("Gate with limit 0 refused")
		}
	}
	if g.InUse() != 100 {
		t.Errorf("InUse() = %d; want 100 (the zero limit still counts)", g.InUse())
	}

	var zero Gate // unlimited but counting
	zero.TryEnter()
	if zero.InUse() != 1 {
		t.Errorf("zero Gate InUse() = %d; want 1", zero.InUse())
	}
}

func TestGateConcurrent(t *testing.T) {
	const limit, workers, rounds = 5, 50, 200
	g := NewGate(limit)
	var in, peak, admitted atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range rounds {
				if !g.TryEnter() {
					continue
				}
				admitted.Add(1)
				storeMax(&peak, in.Add(1))
				runtime.Gosched()
				in.Add(-1)
				g.Leave()
			}
		})
	}
	wg.Wait()
	if peak.Load() > limit || g.InUse() != 0 || admitted.Load() == 0 {
		t.Errorf("peak=%d InUse=%d admitted=%d; want peak <= %d, 0 in use, some admitted", peak.Load(), g.InUse(), admitted.Load(), limit)
	}
}

// BenchmarkLimiterAcquireRelease is the per-tunnel cost of the pool with
// every kind limited, uncontended.
func BenchmarkLimiterAcquireRelease(b *testing.B) {
	l := New(Config{Global: 1 << 20, PerUser: 100, PerIP: 100, PerHost: 100, Groups: map[string]int{"ops": 200}})
	k := Key{User: "alice", Groups: []string{"dev", "ops"}, ClientIP: netip.MustParseAddr("192.0.2.1"), Host: "example.com"}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		s, err := l.Acquire(ctx, k, 0)
		if err != nil {
			b.Fatal(err)
		}
		s.Release()
	}
}

// BenchmarkLimiterAcquireReleaseParallel adds contention on the one mutex:
// many tunnels opening at once, each with its own user, IP and host.
func BenchmarkLimiterAcquireReleaseParallel(b *testing.B) {
	l := New(Config{Global: 1 << 20, PerUser: 100, PerIP: 100, PerHost: 100})
	var id atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := id.Add(1)
		k := Key{User: fmt.Sprintf("u%d", i), ClientIP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Host: fmt.Sprintf("h%d.example", i)}
		ctx := context.Background()
		for pb.Next() {
			s, err := l.Acquire(ctx, k, 0)
			if err != nil {
				b.Fatal(err)
			}
			s.Release()
		}
	})
}

func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"2001:db8:1:2::1", "2001:db8:1:2::"},
		{"fe80::1%eth0", "fe80::"},
		{"::1", "::"},
	} {
		if got := ClientKey(netip.MustParseAddr(tc.in)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("ClientKey(%s) = %v; want %s", tc.in, got, tc.want)
		}
	}
	if got := ClientKey(netip.Addr{}); got.IsValid() {
		t.Errorf("ClientKey(invalid) = %v; want the zero Addr", got)
	}
}
