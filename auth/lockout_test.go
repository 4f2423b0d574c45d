package auth

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// gateUsers replaces every user's matcher (and the dummy) in a's current
// state with one shared countingMatcher, so all hashes are counted (and,
// with gate set, held) together.
func gateUsers(t *testing.T, a *Authenticator) *countingMatcher {
	t.Helper()
	u := a.state.Load().users
	m := &countingMatcher{inner: u.dummy}
	for name := range u.byName {
		u.byName[name] = m
	}
	u.dummy = m
	return m
}

// TestStalePasswordNeverBlocks is the office behind one NAT address: one
// service retries a stale password for ever, the others log in. The stale
// one keeps getting 407, never 429, costs one hash in all, and the others
// are never refused.
func TestStalePasswordNeverBlocks(t *testing.T) {
	clock := newFakeClock()
	a, _ := newTestAuth(t, clock, Options{Throttle: ThrottleConfig{MaxFailures: 3, Window: time.Minute}},
		"alice:"+okBcrypt, "bob:"+okBcrypt)
	m := gateUsers(t, a)
	office := netip.MustParseAddr("192.0.2.1")
	for i := range 30 {
		if r := a.Check(office, basic("bob", "stale-password")); r.Status != StatusInvalid {
			t.Fatalf("stale attempt #%d = %+v; want Invalid", i+1, r)
		}
		if r := a.Check(office, basic("alice", okPass)); r.Status != StatusOK {
			t.Fatalf("good client after stale attempt #%d = %+v; want OK", i+1, r)
		}
		clock.Advance(5 * time.Second)
	}
	// 30 attempts over 150s: remembered while repeated, so one hash for the
	// stale password and one for alice (then cached).
	if got := m.calls.Load(); got != 2 {
		t.Errorf("%d hashes; want 2 (the stale password is not re-hashed)", got)
	}
	// After a quiet Window it is forgotten, checked (and counted) again:
	// still one failure, far from the limit.
	clock.Advance(time.Minute)
	if r := a.Check(office, basic("bob", "stale-password")); r.Status != StatusInvalid {
		t.Errorf("stale attempt after a quiet window = %+v; want Invalid", r)
	}
	if got := m.calls.Load(); got != 3 {
		t.Errorf("%d hashes; want 3", got)
	}
	// A bad header repeated is one failure too.
	for range 10 {
		if r := a.Check(office, "Basic !!"); r.Status != StatusInvalid {
			t.Fatalf("malformed header = %+v; want Invalid", r)
		}
	}
}

// TestAddressBlockSparesTrustedPairs: distinct guesses from a shared
// address block it for users new to it, but not for users who logged in
// from it within the trust period.
func TestAddressBlockSparesTrustedPairs(t *testing.T) {
	clock := newFakeClock()
	a, _ := newTestAuth(t, clock, Options{CacheTTL: -1, Throttle: ThrottleConfig{MaxFailures: 3, Block: 5 * time.Minute}},
		"alice:"+okBcrypt, "bob:"+okBcrypt, "carol:"+okBcrypt)
	m := gateUsers(t, a)
	shared, elsewhere := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
	if r := a.Check(shared, basic("bob", okPass)); r.Status != StatusOK {
		t.Fatalf("bob = %+v; want OK", r)
	}
	if r := a.Check(elsewhere, basic("carol", okPass)); r.Status != StatusOK {
		t.Fatalf("carol elsewhere = %+v; want OK", r)
	}
	want := []Status{StatusInvalid, StatusInvalid, StatusThrottled}
	for i, w := range want {
		if r := a.Check(shared, basic(fmt.Sprint("nobody", i), "guess")); r.Status != w {
			t.Fatalf("guess #%d = %+v; want %v", i+1, r, w)
		}
	}
	if r := a.Check(shared, basic("bob", okPass)); r.Status != StatusOK {
		t.Errorf("trusted bob on the blocked address = %+v; want OK", r)
	}
	before := m.calls.Load()
	if r := a.Check(shared, basic("carol", okPass)); r.Status != StatusThrottled || r.RetryAfter != 5*time.Minute {
		t.Errorf("carol, new to the blocked address = %+v; want Throttled for 5m", r)
	}
	if r := a.Check(shared, basic("alice", "another guess")); r.Status != StatusThrottled {
		t.Errorf("guess for alice on the blocked address = %+v; want Throttled", r)
	}
	if got := m.calls.Load() - before; got != 0 {
		t.Errorf("blocked requests computed %d hashes; want 0", got)
	}
	clock.Advance(5 * time.Minute)
	if r := a.Check(shared, basic("carol", okPass)); r.Status != StatusOK {
		t.Errorf("carol after the block = %+v; want OK", r)
	}
}

// TestBlockComesBeforeCache: a blocked request is refused even when its
// credentials are cached, so a block is never a fast oracle.
func TestBlockComesBeforeCache(t *testing.T) {
	a, _ := newTestAuth(t, newFakeClock(), Options{Throttle: ThrottleConfig{MaxFailures: 2}}, "alice:"+okBcrypt)
	home, blocked := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.66")
	if r := a.Check(home, basic("alice", okPass)); r.Status != StatusOK {
		t.Fatalf("alice at home = %+v; want OK", r)
	}
	a.Check(blocked, basic("x", "1"))
	a.Check(blocked, basic("x", "2"))
	if r := a.Check(blocked, basic("alice", okPass)); r.Status != StatusThrottled {
		t.Errorf("cached credentials from a blocked address = %+v; want Throttled", r)
	}
}

// TestTrustedPairFailuresLockOnlyThePair: someone on a shared address who
// guesses a colleague's password locks out that colleague from that
// address, and nobody else.
func TestTrustedPairFailuresLockOnlyThePair(t *testing.T) {
	clock := newFakeClock()
	a, _ := newTestAuth(t, clock, Options{CacheTTL: -1, Throttle: ThrottleConfig{MaxFailures: 3, Block: time.Minute}},
		"alice:"+okBcrypt, "bob:"+okBcrypt, "carol:"+okBcrypt)
	m := gateUsers(t, a)
	shared, home := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
	for _, u := range []string{"alice", "bob"} {
		if r := a.Check(shared, basic(u, okPass)); r.Status != StatusOK {
			t.Fatalf("%s = %+v; want OK", u, r)
		}
	}
	want := []Status{StatusInvalid, StatusInvalid, StatusThrottled, StatusThrottled}
	for i, w := range want {
		if r := a.Check(shared, basic("alice", fmt.Sprint("guess", i))); r.Status != w {
			t.Fatalf("guess #%d at alice = %+v; want %v", i+1, r, w)
		}
	}
	before := m.calls.Load()
	if r := a.Check(shared, basic("alice", okPass)); r.Status != StatusThrottled || r.RetryAfter != time.Minute {
		t.Errorf("alice on the shared address = %+v; want Throttled for 1m", r)
	}
	if m.calls.Load() != before {
		t.Error("a blocked pair got its password verified")
	}
	for _, c := range []struct {
		who  string
		from netip.Addr
	}{{"bob", shared}, {"carol", shared}, {"alice", home}} {
		if r := a.Check(c.from, basic(c.who, okPass)); r.Status != StatusOK {
			t.Errorf("%s from %s = %+v; want OK", c.who, c.from, r)
		}
	}
	clock.Advance(time.Minute)
	if r := a.Check(shared, basic("alice", okPass)); r.Status != StatusOK {
		t.Errorf("alice after the block = %+v; want OK", r)
	}
}

// TestBurstCostsAtMostMaxFailures: many concurrent wrong passwords, from
// one address and from many, cost at most MaxFailures hashes, because a
// failure counts when its verification starts.
func TestBurstCostsAtMostMaxFailures(t *testing.T) {
	for _, addrs := range []int{1, 10} {
		t.Run(fmt.Sprint(addrs, " addresses"), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a, _ := newTestAuth(t, newFakeClock(), Options{MaxConcurrent: 100, Throttle: ThrottleConfig{MaxFailures: 5}},
					"alice:"+okBcrypt)
				m := gateUsers(t, a)
				m.gate = make(chan struct{})
				var wg sync.WaitGroup
				results := make([]Result, 40)
				for i := range results {
					wg.Go(func() {
						c := netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i%addrs)})
						results[i] = a.Check(c, basic("alice", fmt.Sprint("guess", i)))
					})
				}
				synctest.Wait()
				close(m.gate)
				wg.Wait()
				if got := m.calls.Load(); got > 5 {
					t.Errorf("%d concurrent wrong passwords cost %d hashes; want <= 5", len(results), got)
				}
				for i, r := range results {
					if r.Status != StatusInvalid && r.Status != StatusThrottled {
						t.Errorf("guess #%d = %+v; want Invalid or Throttled", i, r)
					}
				}
			})
		})
	}
}

// TestSameCredentialsFromManyAddresses: a correct password checked from
// many new addresses at once (pods starting) shares one hash and blocks
// nobody, though each check reserved a failure while it ran.
func TestSameCredentialsFromManyAddresses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _ := newTestAuth(t, newFakeClock(), Options{Throttle: ThrottleConfig{MaxFailures: 2}}, "alice:"+okBcrypt)
		m := gateUsers(t, a)
		m.gate = make(chan struct{})
		var wg sync.WaitGroup
		results := make([]Result, 20)
		for i := range results {
			wg.Go(func() {
				results[i] = a.Check(netip.AddrFrom4([4]byte{10, 0, byte(i / 4), 1}), basic("alice", okPass))
			})
		}
		synctest.Wait()
		close(m.gate)
		wg.Wait()
		for i, r := range results {
			if r.Status != StatusOK {
				t.Errorf("Check #%d = %+v; want OK", i, r)
			}
		}
		if got := m.calls.Load(); got != 1 {
			t.Errorf("%d hashes; want 1", got)
		}
	})
}

// TestConcurrencyBound: at most MaxConcurrent hashes run at once; a check
// that waits longer than VerifyWait is StatusBusy and counts as no
// failure; cache hits never wait.
func TestConcurrencyBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _ := newTestAuth(t, newFakeClock(), Options{MaxConcurrent: 2, VerifyWait: time.Second, Throttle: ThrottleConfig{MaxFailures: 2}},
			"alice:"+okBcrypt, "bob:"+okBcrypt, "carol:"+okBcrypt, "dave:"+okBcrypt, "erin:"+okBcrypt)
		client := netip.MustParseAddr("192.0.2.1")
		if r := a.Check(client, basic("erin", okPass)); r.Status != StatusOK {
			t.Fatalf("erin = %+v; want OK", r)
		}
		m := gateUsers(t, a)
		m.gate = make(chan struct{})
		var wg sync.WaitGroup
		users := []string{"alice", "bob", "carol", "dave"}
		results := make([]Result, len(users))
		for i, u := range users {
			wg.Go(func() { results[i] = a.Check(client, basic(u, okPass)) })
		}
		synctest.Wait() // two in the hash, two waiting for a slot
		if got := m.calls.Load(); got != 2 {
			t.Errorf("%d hashes running; want 2", got)
		}
		start := time.Now()
		if r := a.Check(client, basic("erin", okPass)); r.Status != StatusOK || time.Since(start) != 0 {
			t.Errorf("cached erin during the burst = %+v after %v; want OK at once", r, time.Since(start))
		}
		time.Sleep(time.Second) // the waiting two give up
		synctest.Wait()
		close(m.gate)
		wg.Wait()
		var ok, busy int
		for i, r := range results {
			switch {
			case r.Status == StatusOK:
				ok++
			case r.Status == StatusBusy && r.RetryAfter == time.Second && r.User == users[i]:
				busy++
			default:
				t.Errorf("Check(%s) = %+v; want OK or Busy with RetryAfter 1s", users[i], r)
			}
		}
		if ok != 2 || busy != 2 {
			t.Errorf("%d OK, %d busy; want 2 and 2", ok, busy)
		}
		// Two Busy answers counted no failure (MaxFailures is 2): a new
		// user at this address is not blocked.
		if r := a.Check(client, basic("nobody", "x")); r.Status != StatusInvalid {
			t.Errorf("after busy answers, a wrong password = %+v; want Invalid (not Throttled)", r)
		}
	})
}

// TestUpdateKeepsState: an Update that changes files and options keeps the
// throttle's blocks and trust, and the cache entries of users whose hash is
// unchanged; a changed password works at once, even one that had failed.
func TestUpdateKeepsState(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	path := writeFile(t, dir, "htpasswd", "alice:"+okBcrypt+"\nbob:"+okBcrypt+"\ncarol:"+okBcrypt+"\n")
	opts := Options{Now: clock.Now, Throttle: ThrottleConfig{MaxFailures: 3}}
	a, err := New(path, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	office, attacker := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("203.0.113.9")
	for _, u := range []string{"alice", "bob", "carol"} {
		if r := a.Check(office, basic(u, okPass)); r.Status != StatusOK {
			t.Fatalf("%s = %+v; want OK", u, r)
		}
	}
	if r := a.Check(office, basic("bob", "new-pw")); r.Status != StatusInvalid {
		t.Fatalf("bob's future password = %+v; want Invalid", r)
	}
	a.Check(attacker, basic("x", "1"))
	a.Check(attacker, basic("x", "2"))
	if r := a.Check(attacker, basic("x", "3")); r.Status != StatusThrottled {
		t.Fatalf("attacker = %+v; want Throttled", r)
	}

	// bob's password changes, carol leaves; new options and a group.
	writeFile(t, dir, "htpasswd", "alice:"+okBcrypt+"\n")
	if err := SetPassword(path, "bob", []byte("new-pw"), 4); err != nil {
		t.Fatal(err)
	}
	opts.CacheTTL = time.Hour
	opts.MaxConcurrent = 3
	opts.Throttle.Block = time.Hour
	opts.Groups = map[string][]string{"ops": {"alice"}}
	if err := a.Update(path, "", opts); err != nil {
		t.Fatal(err)
	}
	if n := a.state.Load().cache.len(); n != 1 {
		t.Errorf("cache holds %d entries after Update; want 1 (alice's)", n)
	}
	for _, c := range []struct {
		user, pass string
		want       Status
	}{{"bob", okPass, StatusInvalid}, {"carol", okPass, StatusInvalid}, {"bob", "new-pw", StatusOK}} {
		if r := a.Check(office, basic(c.user, c.pass)); r.Status != c.want {
			t.Errorf("Check(%s, %s) after Update = %+v; want %v", c.user, c.pass, r, c.want)
		}
	}
	m := gateUsers(t, a)
	if r := a.Check(office, basic("alice", okPass)); r.Status != StatusOK || m.calls.Load() != 0 {
		t.Errorf("alice after Update = %+v after %d hashes; want OK from the cache", r, m.calls.Load())
	}
	if got := a.Groups("alice"); len(got) != 1 || got[0] != "ops" {
		t.Errorf("Groups(alice) = %v; want [ops]", got)
	}
	if r := a.Check(attacker, basic("alice", okPass)); r.Status != StatusThrottled {
		t.Errorf("attacker after Update = %+v; want still Throttled", r)
	}
	if th := a.state.Load().throttle; th.block != time.Hour {
		t.Errorf("throttle Block after Update = %v; want 1h", th.block)
	}
	if n := cap(a.state.Load().slots); n != 3 {
		t.Errorf("%d hashing slots after Update; want 3", n)
	}
}

// TestUpdateForgetsFailedCredentials: a password that failed just before
// a Reload that made it right works right after.
func TestUpdateForgetsFailedCredentials(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "htpasswd", "alice:"+okBcrypt+"\n")
	a, err := New(path, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddr("192.0.2.1")
	for range 3 {
		if r := a.Check(client, basic("bob", "new-pw")); r.Status != StatusInvalid {
			t.Fatalf("bob before he exists = %+v; want Invalid", r)
		}
	}
	writeFile(t, dir, "htpasswd", "alice:"+okBcrypt+"\n")
	if err := SetPassword(path, "bob", []byte("new-pw"), 4); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := a.Check(client, basic("bob", "new-pw")); r.Status != StatusOK {
		t.Errorf("bob after Reload = %+v; want OK", r)
	}
}

// TestConcurrentGoodLoginsNotBlocked: more users than MaxFailures log in
// at once from an address new to all of them. Each reserves a failure
// while its hash runs, but those beyond the limit wait for room rather
// than being refused for failures that never happen.
func TestConcurrentGoodLoginsNotBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, _ := newTestAuth(t, newFakeClock(), Options{MaxConcurrent: 10, Throttle: ThrottleConfig{MaxFailures: 2}},
			"alice:"+okBcrypt, "bob:"+okBcrypt, "carol:"+okBcrypt, "dave:"+okBcrypt, "erin:"+okBcrypt)
		m := gateUsers(t, a)
		m.gate = make(chan struct{})
		client := netip.MustParseAddr("192.0.2.1")
		users := []string{"alice", "bob", "carol", "dave", "erin"}
		results := make([]Result, len(users))
		var wg sync.WaitGroup
		for i, u := range users {
			wg.Go(func() { results[i] = a.Check(client, basic(u, okPass)) })
		}
		synctest.Wait()
		if got := m.calls.Load(); got != 2 {
			t.Errorf("%d hashes started; want 2 (MaxFailures)", got)
		}
		close(m.gate)
		wg.Wait()
		for i, r := range results {
			if r.Status != StatusOK {
				t.Errorf("Check(%s) = %+v; want OK", users[i], r)
			}
		}
	})
}
