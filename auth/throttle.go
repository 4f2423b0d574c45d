package auth

import (
	"errors"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// ThrottleConfig configures the brute-force throttle. The zero value is on,
// with the defaults below: 10 failures in a minute block for 5 minutes,
// which lets a person mistype freely but holds one address to about 2,400
// guesses a day. Negative values are an error.
type ThrottleConfig struct {
	// Disabled turns the throttle off.
	Disabled bool
	// MaxFailures is how many failed attempts within Window from one client
	// address (or for one user name) block it. 0 means 10.
	MaxFailures int
	// Window is the period failures are counted over, starting at the first
	// failure after a quiet period. 0 means 1 minute.
	Window time.Duration
	// Block is how long a blocked address or user name is refused. It runs
	// from the failure that set it and is not extended by attempts made
	// while blocked. 0 means 5 minutes.
	Block time.Duration
	// MaxTracked bounds each of the throttle's tables (addresses, user
	// names, trusted pairs); the least recently updated entry is evicted.
	// 0 means 100,000 (roughly 20 MB per full table).
	MaxTracked int
}

// trustFor is how long a client address stays trusted for a user after it
// authenticated as that user: such a client is exempt from the per-user block.
const trustFor = 24 * time.Hour

func (c ThrottleConfig) validate() error {
	if c.MaxFailures < 0 || c.Window < 0 || c.Block < 0 || c.MaxTracked < 0 {
		return errors.New("throttle: MaxFailures, Window, Block and MaxTracked must not be negative")
	}
	return nil
}

// throttle counts failed attempts per client address and per claimed user
// name. A nil *throttle never blocks.
//
// Addresses are grouped the way providers hand them out: an IPv4 address
// alone, an IPv6 address by its /64, since anyone holding one IPv6 address
// usually holds the whole /64. User names are keyed by a seeded 64-bit hash
// so the table's size does not depend on name length; every claimed name is
// tracked, known or not, so the throttle cannot reveal which names exist.
//
// The per-user block answers distributed guessing (one address per guess)
// but must not hand an attacker a switch to lock a real user out. So it
// applies only to addresses that have not authenticated as that user within
// trustFor: a user working from a known address is never refused because
// someone else guesses their password, and a blocked attempt is refused
// before verification, so no guess is ever answered for a blocked user from
// an untrusted address.
type throttle struct {
	maxFailures   int
	window, block time.Duration
	now           func() time.Time
	seed          maphash.Seed

	mu      sync.Mutex // guards the following fields
	addrs   *boundedMap[netip.Prefix, counter]
	users   *boundedMap[uint64, counter]
	trusted *boundedMap[trustKey, time.Time] // last success
}

// counter is the failure state of one address or user name.
type counter struct {
	start time.Time // first failure of the current window
	n     int       // failures in the current window
	until time.Time // blocked before this instant
}

type trustKey struct {
	user uint64
	addr netip.Prefix
}

// newThrottle returns a throttle using clock now, or nil if c.Disabled.
func newThrottle(c ThrottleConfig, now func() time.Time) *throttle {
	if c.Disabled {
		return nil
	}
	t := &throttle{
		maxFailures: orDefault(c.MaxFailures, 10),
		window:      orDefault(c.Window, time.Minute),
		block:       orDefault(c.Block, 5*time.Minute),
		now:         now,
		seed:        maphash.MakeSeed(),
	}
	size := orDefault(c.MaxTracked, 100_000)
	t.addrs = newBoundedMap[netip.Prefix, counter](size)
	t.users = newBoundedMap[uint64, counter](size)
	t.trusted = newBoundedMap[trustKey, time.Time](size)
	return t
}

// orDefault returns v, or def if v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// addrKey groups an address as described on throttle. An invalid address
// (the caller could not parse the peer) maps to the zero Prefix: all such
// clients share one counter, which errs on the side of blocking.
func addrKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

func (t *throttle) userKey(user string) uint64 { return maphash.String(t.seed, user) }

// addrBlocked reports whether client is blocked and for how much longer.
func (t *throttle) addrBlocked(client netip.Addr) (time.Duration, bool) {
	if t == nil {
		return 0, false
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	c, _ := t.addrs.get(addrKey(client))
	return blockedFor(c, now)
}

// userBlocked reports whether user is blocked for client (see throttle).
func (t *throttle) userBlocked(user string, client netip.Addr) (time.Duration, bool) {
	if t == nil {
		return 0, false
	}
	now := t.now()
	uk := t.userKey(user)
	t.mu.Lock()
	defer t.mu.Unlock()
	c, _ := t.users.get(uk)
	d, blocked := blockedFor(c, now)
	if !blocked || t.isTrusted(trustKey{uk, addrKey(client)}, now) {
		return 0, false
	}
	return d, true
}

// failure records a failed attempt by client claiming user ("" if the
// header did not parse) and reports whether client is now blocked (by
// address, or by user name unless trusted) and for how long.
func (t *throttle) failure(client netip.Addr, user string) (time.Duration, bool) {
	if t == nil {
		return 0, false
	}
	now := t.now()
	ak := addrKey(client)
	t.mu.Lock()
	defer t.mu.Unlock()
	retry, blocked := countFailure(t, t.addrs, ak, now)
	if user != "" {
		uk := t.userKey(user)
		if d, ub := countFailure(t, t.users, uk, now); ub && !t.isTrusted(trustKey{uk, ak}, now) {
			retry, blocked = max(retry, d), true
		}
	}
	return retry, blocked
}

// success records that client authenticated as user, trusting the pair.
func (t *throttle) success(client netip.Addr, user string) {
	if t == nil {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.trusted.pruneFront(func(last time.Time) bool { return now.Sub(last) >= trustFor })
	t.trusted.put(trustKey{t.userKey(user), addrKey(client)}, now)
}

func (t *throttle) isTrusted(k trustKey, now time.Time) bool {
	last, ok := t.trusted.get(k)
	return ok && now.Sub(last) < trustFor
}

// countFailure adds one failure for k in m and returns k's block state.
// Attempts while blocked are not counted, so a block is not extended by a
// client hammering away, and it ends Block after it began.
func countFailure[K comparable](t *throttle, m *boundedMap[K, counter], k K, now time.Time) (time.Duration, bool) {
	c, _ := m.get(k)
	if d, blocked := blockedFor(c, now); blocked {
		return d, true
	}
	if c.n == 0 || now.Sub(c.start) >= t.window {
		c = counter{start: now}
	}
	c.n++
	if c.n >= t.maxFailures {
		c = counter{until: now.Add(t.block)}
	}
	m.pruneFront(func(c counter) bool { return t.stale(c, now) })
	m.put(k, c)
	return blockedFor(c, now)
}

// stale reports whether c holds no information any more.
func (t *throttle) stale(c counter, now time.Time) bool {
	return !now.Before(c.until) && now.Sub(c.start) >= t.window
}

// blockedFor reports whether c blocks at now, and for how long, rounded up
// to whole seconds so it can go straight into a Retry-After header.
func blockedFor(c counter, now time.Time) (time.Duration, bool) {
	d := c.until.Sub(now)
	if d <= 0 {
		return 0, false
	}
	return (d + time.Second - 1).Truncate(time.Second), true
}
