package auth

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// testKey stands in for the macKey of user and cred.
func testKey(user, cred string) macKey { return macKey(sha256.Sum256([]byte(user + "\x00" + cred))) }

var guesses atomic.Int64

// failure runs one failed verification of a credential never tried before
// by client claiming user, as Check would, and reports the block state.
func (t *throttle) failure(client netip.Addr, user string) (time.Duration, bool) {
	return t.failWith(client, user, fmt.Sprint("guess-", guesses.Add(1)))
}

// failWith is failure with the credential cred.
func (t *throttle) failWith(client netip.Addr, user, cred string) (time.Duration, bool) {
	tk, d, v := t.begin(client, user, testKey(user, cred), true)
	switch v {
	case verdictBlocked:
		return d, true
	case verdictRepeat:
		return 0, false
	}
	return t.finish(tk, outcomeFailed)
}

// addrBlocked reports whether a new user would be refused at client.
func (t *throttle) addrBlocked(client netip.Addr) (time.Duration, bool) {
	_, d, v := t.begin(client, "", testKey("", "probe"), false)
	return d, v == verdictBlocked
}

// userBlocked reports whether user is refused at client.
func (t *throttle) userBlocked(user string, client netip.Addr) (time.Duration, bool) {
	_, d, v := t.begin(client, user, testKey(user, "probe"), false)
	return d, v == verdictBlocked
}

func TestThrottleKicksInAndReleases(t *testing.T) {
	type step struct {
		advance time.Duration
		fail    bool // record a failure (else only check)
		blocked bool
		retry   time.Duration
	}
	fail := func(blocked bool, retry time.Duration) step { return step{fail: true, blocked: blocked, retry: retry} }
	tests := []struct {
		name  string
		cfg   ThrottleConfig
		steps []step
	}{
		{"defaults block at the 10th failure for 5m", ThrottleConfig{}, []step{
			fail(false, 0), fail(false, 0), fail(false, 0), fail(false, 0), fail(false, 0),
			fail(false, 0), fail(false, 0), fail(false, 0), fail(false, 0),
			fail(true, 5*time.Minute),
			{advance: 5*time.Minute - time.Second, blocked: true, retry: time.Second},
			{advance: time.Second, blocked: false},
		}},
		{"window restarts the count", ThrottleConfig{MaxFailures: 3, Window: time.Minute}, []step{
			fail(false, 0), fail(false, 0),
			{advance: time.Minute},
			fail(false, 0), fail(false, 0),
			fail(true, 5*time.Minute),
		}},
		{"failures while blocked do not extend it", ThrottleConfig{MaxFailures: 2, Block: 5 * time.Minute}, []step{
			fail(false, 0), fail(true, 5*time.Minute),
			{advance: 4 * time.Minute, blocked: true, retry: time.Minute},
			fail(true, time.Minute), fail(true, time.Minute),
			{advance: time.Minute, blocked: false},
			fail(false, 0), // counting starts afresh
			fail(true, 5*time.Minute),
		}},
		{"retry rounds up to seconds", ThrottleConfig{MaxFailures: 1, Block: 1500 * time.Millisecond}, []step{
			fail(true, 2*time.Second),
			{advance: time.Second, blocked: true, retry: time.Second},
			{advance: 500 * time.Millisecond, blocked: false},
		}},
	}
	client := netip.MustParseAddr("192.0.2.10")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			th := newThrottle(tt.cfg, clock.Now)
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				var retry time.Duration
				var blocked bool
				if s.fail {
					retry, blocked = th.failure(client, "")
				} else {
					retry, blocked = th.addrBlocked(client)
				}
				if blocked != s.blocked || retry != s.retry {
					t.Fatalf("step %d (%+v): blocked=%v retry=%v; want %v, %v", i, s, blocked, retry, s.blocked, s.retry)
				}
			}
		})
	}
}

func TestThrottleAddrGrouping(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"2001:db8::1", "2001:db8::ffff:1", true},
		{"2001:db8::1", "2001:db8:0:1::1", false},
		{"192.0.2.1", "::ffff:192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"fe80::1%eth0", "fe80::2%eth1", true},
	}
	for _, tt := range tests {
		t.Run(tt.a+" "+tt.b, func(t *testing.T) {
			th := newThrottle(ThrottleConfig{MaxFailures: 1}, newFakeClock().Now)
			if _, blocked := th.failure(netip.MustParseAddr(tt.a), ""); !blocked {
				t.Fatal("one failure did not block with MaxFailures 1")
			}
			if _, blocked := th.addrBlocked(netip.MustParseAddr(tt.b)); blocked != tt.same {
				t.Errorf("after blocking %s, %s blocked = %v; want %v", tt.a, tt.b, blocked, tt.same)
			}
		})
	}
}

func TestThrottleUserBlockAndTrust(t *testing.T) {
	clock := newFakeClock()
	th := newThrottle(ThrottleConfig{MaxFailures: 2, Block: 2 * trustFor}, clock.Now)
	home, bot1, bot2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	th.success(home, "alice")
	if _, b := th.failure(bot1, "alice"); b {
		t.Fatal("first failure blocked")
	}
	if _, b := th.failure(bot2, "alice"); !b {
		t.Fatal("second failure for alice from another address did not block")
	}
	if _, b := th.addrBlocked(bot2); b {
		t.Error("the per-user block also blocked the address")
	}
	if _, b := th.userBlocked("alice", bot2); !b {
		t.Error("alice not blocked for an untrusted address")
	}
	if _, b := th.userBlocked("alice", home); b {
		t.Error("alice blocked for her trusted address")
	}
	if _, b := th.failure(home, "alice"); b {
		t.Error("a failure from the trusted address was answered as blocked")
	}
	if _, b := th.userBlocked("bob", bot2); b {
		t.Error("bob blocked by alice's failures")
	}
	clock.Advance(trustFor)
	if _, b := th.userBlocked("alice", home); !b {
		t.Error("trust did not expire after trustFor")
	}
}

func TestThrottleMaxTracked(t *testing.T) {
	clock := newFakeClock()
	th := newThrottle(ThrottleConfig{MaxFailures: 1, MaxTracked: 3}, clock.Now)
	first := netip.MustParseAddr("10.0.0.1")
	th.failure(first, "u0")
	for i := 2; i <= 4; i++ {
		th.failure(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), fmt.Sprint("u", i))
		th.success(netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), "x")
	}
	if n, u, tr := th.addrs.len(), th.users.len(), th.pairs.len(); n != 3 || u != 3 || tr != 3 {
		t.Errorf("tables hold %d, %d, %d entries; want 3 each", n, u, tr)
	}
	if _, b := th.addrBlocked(first); b {
		t.Error("oldest address not evicted")
	}
	if _, b := th.addrBlocked(netip.MustParseAddr("10.0.0.4")); !b {
		t.Error("newest address evicted")
	}
	// Stale entries are pruned as new ones arrive.
	clock.Advance(time.Hour)
	th.failure(netip.MustParseAddr("10.0.0.9"), "")
	if n := th.addrs.len(); n != 1 {
		t.Errorf("after expiry, address table holds %d entries; want 1", n)
	}
}

func TestThrottleDisabled(t *testing.T) {
	th := newThrottle(ThrottleConfig{Disabled: true, MaxFailures: 1}, newFakeClock().Now)
	if th != nil {
		t.Fatal("newThrottle(Disabled) != nil")
	}
	c := netip.MustParseAddr("192.0.2.1")
	for range 5 {
		if _, b := th.failure(c, "alice"); b {
			t.Fatal("disabled throttle blocked")
		}
	}
	th.success(c, "alice")
	if _, b := th.addrBlocked(c); b {
		t.Error("disabled throttle blocks the address")
	}
	if _, b := th.userBlocked("alice", c); b {
		t.Error("disabled throttle blocks the user")
	}
}
