package auth

import (
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestReloadDuringVerification checks that a verification that began
// before a Reload cannot put its result into the new cache.
func TestReloadDuringVerification(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _ := newTestAuth(t, newFakeClock(), Options{}, "alice:"+okBcrypt)
		old := a.state.Load()
		m := countCalls(t, a, "alice", false)
		m.gate = make(chan struct{})
		done := make(chan Result)
		go func() { done <- a.Check(testClient, basic("alice", okPass)) }()
		synctest.Wait() // Check is now inside the hash, waiting for the gate
		if m.calls.Load() != 1 {
			t.Fatal("verification did not start")
		}
		if err := a.Reload(); err != nil {
			t.Fatal(err)
		}
		close(m.gate)
		if r := <-done; r.Status != StatusOK {
			t.Fatalf("Check = %+v; want OK", r)
		}
		if n := old.cache.len(); n != 1 {
			t.Errorf("old cache holds %d entries; want 1", n)
		}
		if n := a.state.Load().cache.len(); n != 0 {
			t.Errorf("new cache holds %d entries; want 0", n)
		}
	})
}

func TestCacheTTLAndSize(t *testing.T) {
	clock := newFakeClock()
	a, _ := newTestAuth(t, clock, Options{CacheTTL: time.Minute, CacheSize: 2},
		"alice:"+okBcrypt, "bob:"+okBcrypt, "carol:"+okBcrypt)
	m := countCalls(t, a, "alice", false)
	check := func(user string, wantCalls int32) {
		t.Helper()
		if r := a.Check(testClient, basic(user, okPass)); r.Status != StatusOK {
			t.Fatalf("Check(%s) = %+v; want OK", user, r)
		}
		if got := m.calls.Load(); got != wantCalls {
			t.Fatalf("after Check(%s): %d hashes for alice; want %d", user, got, wantCalls)
		}
	}
	check("alice", 1)
	check("alice", 1)
	clock.Advance(time.Minute - time.Nanosecond)
	check("alice", 1) // hits do not extend the expiry...
	clock.Advance(time.Nanosecond)
	check("alice", 2) // ...so it expires a TTL after the hash was computed
	check("bob", 2)
	check("carol", 2) // evicts alice, the oldest
	if n := a.state.Load().cache.len(); n != 2 {
		t.Errorf("cache holds %d entries; want 2", n)
	}
	check("alice", 3)

	off, _ := newTestAuth(t, clock, Options{CacheTTL: -1}, "alice:"+okBcrypt)
	m = countCalls(t, off, "alice", false)
	for i := range 3 {
		if r := off.Check(testClient, basic("alice", okPass)); r.Status != StatusOK || m.calls.Load() != int32(i+1) {
			t.Fatalf("cache off: Check #%d = %+v after %d hashes; want OK after %d", i, r, m.calls.Load(), i+1)
		}
	}
}

// TestConcurrentChecksShareOneHash starts many checks of the same
// credentials while the first is still hashing: they must wait for it
// rather than each compute bcrypt.
func TestConcurrentChecksShareOneHash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _ := newTestAuth(t, newFakeClock(), Options{}, "alice:"+okBcrypt)
		m := countCalls(t, a, "alice", false)
		m.gate = make(chan struct{})
		var wg sync.WaitGroup
		results := make([]Result, 20)
		for i := range results {
			wg.Go(func() {
				c := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
				results[i] = a.Check(c, basic("alice", okPass))
			})
		}
		synctest.Wait() // every goroutine is now blocked: one in the hash, the rest waiting for it
		if got := m.calls.Load(); got != 1 {
			t.Errorf("%d concurrent hashes; want 1", got)
		}
		close(m.gate)
		wg.Wait()
		for i, r := range results {
			if r.Status != StatusOK {
				t.Errorf("Check #%d = %+v; want OK", i, r)
			}
		}
	})
}

// newBenchAuth writes a cost-10 bcrypt entry with SetPassword (the real
// tool is not needed to measure speed) and loads it.
func newBenchAuth(b *testing.B, opts Options) *Authenticator {
	path := filepath.Join(b.TempDir(), "htpasswd")
	if err := SetPassword(path, "alice", []byte("correct horse"), DefaultCost); err != nil {
		b.Fatal(err)
	}
	a, err := New(path, "", opts)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func BenchmarkCheckCached(b *testing.B) {
	a := newBenchAuth(b, Options{})
	h := basic("alice", "correct horse")
	if r := a.Check(testClient, h); r.Status != StatusOK {
		b.Fatalf("Check = %+v", r)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r := a.Check(testClient, h); r.Status != StatusOK {
			b.Fatalf("Check = %+v", r)
		}
	}
}

func BenchmarkCheckCachedParallel(b *testing.B) {
	a := newBenchAuth(b, Options{})
	h := basic("alice", "correct horse")
	a.Check(testClient, h)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := a.Check(testClient, h); r.Status != StatusOK {
				b.Errorf("Check = %+v", r)
				return
			}
		}
	})
}

func BenchmarkCheckBcryptUncached(b *testing.B) {
	a := newBenchAuth(b, Options{CacheTTL: -1})
	h := basic("alice", "correct horse")
	b.ReportAllocs()
	for b.Loop() {
		if r := a.Check(testClient, h); r.Status != StatusOK {
			b.Fatalf("Check = %+v", r)
		}
	}
}
