package auth

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// ThrottleConfig configures the brute-force throttle. The zero value is on,
// with the defaults below: 10 distinct failures in a minute block for 5
// minutes, which lets a person mistype freely but holds one address to
// about 2,400 guesses a day. Negative values are an error.
type ThrottleConfig struct {
	// Disabled turns the throttle off.
	Disabled bool
	// MaxFailures is how many failed attempts within Window from one client
	// address (or for one user name, or for one trusted user and address
	// pair) block it. 0 means 10.
	MaxFailures int
	// Window is the period failures are counted over, starting at the first
	// failure after a quiet period. It is also how long a failed credential
	// is remembered per address (see throttle). 0 means 1 minute.
	Window time.Duration
	// Block is how long a blocked address or user name is refused. It runs
	// from the failure that set it and is not extended by attempts made
	// while blocked. 0 means 5 minutes.
	Block time.Duration
	// MaxTracked bounds each of the throttle's tables (addresses, user
	// names, user and address pairs); the least recently updated entry is
	// evicted. 0 means 100,000 (roughly 35 MB for a full address table,
	// which remembers failed credentials, and 20 MB for each other one).
	MaxTracked int
}

// trustFor is how long a client address stays trusted for a user after it
// authenticated as that user (smart lockout's "familiar location").
const trustFor = 24 * time.Hour

// recentFailed is how many failed credentials each address remembers.
const recentFailed = 8

func (c ThrottleConfig) validate() error {
	if c.MaxFailures < 0 || c.Window < 0 || c.Block < 0 || c.MaxTracked < 0 {
		return errors.New("throttle: MaxFailures, Window, Block and MaxTracked must not be negative")
	}
	return nil
}

// throttle counts failed attempts, modelled on Microsoft Entra's smart
// lockout: it stops guessing, not users. A nil *throttle never blocks.
//
//   - Addresses are grouped the way providers hand them out: an IPv4
//     address alone, an IPv6 address by its /64, since anyone holding one
//     IPv6 address usually holds the whole /64.
//   - Each address remembers its last few failed credentials as HMAC
//     fingerprints (never the password), each for Window after it was last
//     seen. The same wrong credentials repeated from one address count once
//     and are answered without hashing again, so a client with a stale
//     password gets 407 for ever and never 429, and costs no CPU.
//   - A (user, address) pair that authenticated within trustFor is trusted.
//     Its failures count against the pair alone, with the same threshold,
//     and no block caused by others (by address or by user name) refuses
//     it. So a guesser on a shared address can lock out one colleague from
//     that address, nobody else, and nobody from anywhere else.
//   - Failures of untrusted pairs count against the address and the claimed
//     user name. An address block refuses every untrusted pair (a user new
//     to the address waits for the block to end); a user block answers
//     distributed guessing (one address per guess) for untrusted addresses.
//   - A failure counts when its verification starts (reserve), and is given
//     back if the credentials turn out right (finish), so a burst from one
//     address costs at most MaxFailures hashes. A blocked request is refused
//     before any hash and before any cache lookup, so a block is no oracle.
//
// User names are keyed by a seeded 64-bit hash so the tables' size does not
// depend on name length; every claimed name is tracked, known or not, so the
// throttle cannot reveal which names exist.
type throttle struct {
	now  func() time.Time
	seed maphash.Seed

	mu            sync.Mutex // guards the following fields
	maxFailures   int
	window, block time.Duration
	gen           uint32 // bumped by forgetFailed; fingerprints of older gens are void
	addrs         *boundedMap[netip.Prefix, *addrState]
	users         *boundedMap[uint64, counter]
	pairs         *boundedMap[trustKey, pairState]
	// userPending counts the verifications in flight per credential that
	// reserved on, or joined, a user counter: the same credential checked
	// from several addresses at once (twenty pods starting) is one shared
	// verification and counts once against the user.
	userPending map[uint64]int
	settled     chan struct{} // closed (and replaced) when a reservation settles
}

// counter is the failure state of one address, user name or pair.
type counter struct {
	start   time.Time // first failure of the current window
	n       int       // failures in the current window, settled or pending
	pending int       // of n, reservations still being verified
	until   time.Time // blocked before this instant
}

// addrState is what the throttle knows of one client address.
type addrState struct {
	counter
	recent [recentFailed]fingerprint
}

// fingerprint is a credential recently tried from an address: the first 8
// bytes of its macKey, which without the per-process key say nothing.
type fingerprint struct {
	sum     uint64
	seen    int64 // last attempt, Unix ns; 0: free slot
	gen     uint32
	pending bool // a verification is in flight: the credential is not known bad yet
}

// pairState is what the throttle knows of one user at one address.
type pairState struct {
	counter
	trusted time.Time // last success; zero: never
}

type trustKey struct {
	user uint64
	addr netip.Prefix
}

// verdict is the throttle's answer before a verification.
type verdict int

const (
	verdictVerify  verdict = iota // go on and verify
	verdictBlocked                // refuse with 429, unverified
	verdictRepeat                 // the same credential failed recently from here: 407, unverified
	verdictWait                   // no room to count one more failure yet: wait on ticket.settled
)

// outcome is how a verification ended, for finish.
type outcome int

const (
	outcomeOK     outcome = iota
	outcomeFailed         // wrong credentials
	outcomeVoid           // not verified (busy): give the reservation back
)

// ticket records what reserve counted, so that finish can settle it.
type ticket struct {
	ak      netip.Prefix
	uk      uint64
	user    string // "" if the header did not parse
	fp      uint64
	gen     uint32
	trusted bool
	leader  bool            // this request reserved; others with the same credential joined it
	onUser  bool            // counted in userPending
	settled <-chan struct{} // with verdictWait: closed when it is worth asking again
	userRes bool            // reserved on the user counter
	starts  [2]time.Time    // window starts of the counters reserved on (addr or pair, user)
}

// newThrottle returns a throttle using clock now, or nil if c.Disabled.
func newThrottle(c ThrottleConfig, now func() time.Time) *throttle {
	if c.Disabled {
		return nil
	}
	t := &throttle{now: now, seed: maphash.MakeSeed(), userPending: make(map[uint64]int), settled: make(chan struct{})}
	t.addrs = newBoundedMap[netip.Prefix, *addrState](1)
	t.users = newBoundedMap[uint64, counter](1)
	t.pairs = newBoundedMap[trustKey, pairState](1)
	t.configure(c)
	return t
}

// configure applies c's numbers (not Disabled), keeping all state. A
// smaller MaxTracked takes effect as entries are added.
func (t *throttle) configure(c ThrottleConfig) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxFailures = orDefault(c.MaxFailures, 10)
	t.window = orDefault(c.Window, time.Minute)
	t.block = orDefault(c.Block, 5*time.Minute)
	size := orDefault(c.MaxTracked, 100_000)
	t.addrs.max, t.users.max, t.pairs.max = size, size, size
}

// forgetFailed voids every remembered failed credential: after the users
// file changed, a credential that failed may now be right.
func (t *throttle) forgetFailed() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
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

func fpOf(k macKey) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// begin decides whether client may have the credential k (for user, ""
// if the header did not parse) verified. With reserve false it only looks.
// With reserve true it also counts a failure in advance, unless the same
// credential is already being verified for this address, in which case the
// ticket joins that verification and counts nothing. If the counts are
// full of reservations still being verified, it answers verdictWait: the
// caller waits on tk.settled and asks again, so that good logins racing
// each other are not refused for failures that may never happen. The
// duration is the block's remaining time for verdictBlocked.
func (t *throttle) begin(client netip.Addr, user string, k macKey, reserve bool) (ticket, time.Duration, verdict) {
	if t == nil {
		return ticket{}, 0, verdictVerify
	}
	now := t.now()
	tk := ticket{ak: addrKey(client), user: user, fp: fpOf(k)}
	t.mu.Lock()
	defer t.mu.Unlock()
	tk.gen = t.gen
	as, _ := t.addrs.get(tk.ak)
	var ps pairState
	var uc counter
	if user != "" {
		tk.uk = t.userKey(user)
		ps, _ = t.pairs.get(trustKey{tk.uk, tk.ak})
		tk.trusted = !ps.trusted.IsZero() && now.Sub(ps.trusted) < trustFor
		uc, _ = t.users.get(tk.uk)
	}
	if d, blocked := t.blocked(tk, as, ps, now); blocked {
		return tk, d, verdictBlocked
	}
	var slot *fingerprint
	if as != nil {
		slot = as.find(tk.fp, tk.gen, now, t.window)
	}
	if slot != nil && !slot.pending {
		slot.seen = now.UnixNano() // still failing: remember it longer
		t.addrs.put(tk.ak, as)
		return tk, 0, verdictRepeat
	}
	if !reserve || slot != nil { // slot != nil: pending, join it
		return tk, 0, verdictVerify
	}
	if as == nil {
		as = new(addrState)
	}
	userRes := user != "" && !tk.trusted && t.userPending[tk.fp] == 0
	if tk.trusted && t.full(ps.counter) || !tk.trusted && t.full(as.counter) || userRes && t.full(uc) {
		tk.settled = t.settled
		return tk, 0, verdictWait
	}
	tk.leader = true
	*as.free(now, t.window) = fingerprint{sum: tk.fp, seen: now.UnixNano(), gen: tk.gen, pending: true}
	if tk.trusted {
		ps.counter = t.count(ps.counter, now)
		tk.starts[0] = ps.start
		t.putPair(trustKey{tk.uk, tk.ak}, ps, now)
	} else {
		as.counter = t.count(as.counter, now)
		tk.starts[0] = as.start
	}
	if user != "" && !tk.trusted {
		tk.onUser, tk.userRes = true, userRes
		if userRes {
			uc = t.count(uc, now)
			tk.starts[1] = uc.start
			t.users.pruneFront(func(c counter) bool { return t.stale(c, now) })
			t.users.put(tk.uk, uc)
		}
		t.userPending[tk.fp]++
	}
	t.putAddr(tk.ak, as, now)
	return tk, 0, verdictVerify
}

// finish settles tk after its verification: a success gives the reserved
// failure back and trusts the pair; a failure keeps it (the one that
// completes MaxFailures starts the block) and remembers the credential as
// bad; a void one gives it back. It reports whether tk's client is now
// blocked, so the attempt that reached the limit can say so.
func (t *throttle) finish(tk ticket, o outcome) (time.Duration, bool) {
	if t == nil {
		return 0, false
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	as, _ := t.addrs.get(tk.ak)
	pk := trustKey{tk.uk, tk.ak}
	ps, _ := t.pairs.get(pk)
	pairChanged := o == outcomeOK
	failed := o == outcomeFailed
	if tk.leader {
		if as != nil {
			if slot := as.find(tk.fp, tk.gen, now, t.window); slot != nil && slot.pending {
				if failed && tk.gen == t.gen {
					slot.pending, slot.seen = false, now.UnixNano()
				} else {
					*slot = fingerprint{}
				}
			}
		}
		switch {
		case tk.trusted:
			ps.counter = t.settle(ps.counter, tk.starts[0], failed, now)
			pairChanged = true
		case as != nil:
			as.counter = t.settle(as.counter, tk.starts[0], failed, now)
		}
		if tk.userRes {
			if uc, ok := t.users.get(tk.uk); ok {
				t.users.put(tk.uk, t.settle(uc, tk.starts[1], failed, now))
			}
		}
		if as != nil {
			t.addrs.put(tk.ak, as)
		}
		close(t.settled) // wake those waiting for room (verdictWait)
		t.settled = make(chan struct{})
	}
	if tk.onUser {
		if t.userPending[tk.fp]--; t.userPending[tk.fp] <= 0 {
			delete(t.userPending, tk.fp)
		}
	}
	if o == outcomeOK {
		ps.trusted = now
	}
	if pairChanged {
		t.putPair(pk, ps, now)
	}
	if o == outcomeOK {
		return 0, false
	}
	return t.blocked(tk, as, ps, now)
}

// success records that client authenticated as user without a
// verification (a cache hit), trusting the pair.
func (t *throttle) success(client netip.Addr, user string) {
	if t == nil {
		return
	}
	now := t.now()
	k := trustKey{t.userKey(user), addrKey(client)}
	t.mu.Lock()
	defer t.mu.Unlock()
	ps, _ := t.pairs.get(k)
	ps.trusted = now
	t.putPair(k, ps, now)
}

// blocked applies the rules on throttle to tk's counters. as may be nil.
func (t *throttle) blocked(tk ticket, as *addrState, ps pairState, now time.Time) (time.Duration, bool) {
	if tk.trusted {
		return blockedFor(ps.counter, now)
	}
	var d time.Duration
	var blocked bool
	if as != nil {
		d, blocked = blockedFor(as.counter, now)
	}
	if tk.user != "" {
		uc, _ := t.users.get(tk.uk)
		if ud, ub := blockedFor(uc, now); ub {
			d, blocked = max(d, ud), true
		}
	}
	return d, blocked
}

// full reports whether c has no room for another reservation: MaxFailures
// are counted, some still being verified.
func (t *throttle) full(c counter) bool { return c.pending > 0 && c.n >= t.maxFailures }

// count reserves one failure in c at now. The caller has checked that c
// neither blocks nor is full.
func (t *throttle) count(c counter, now time.Time) counter {
	if c.pending == 0 && (c.n == 0 || now.Sub(c.start) >= t.window || !c.until.IsZero()) {
		c = counter{start: now}
	}
	c.n++
	c.pending++
	return c
}

// settle ends a reservation made in the window that began at start: a
// failure stays counted, and the one that brings the settled failures to
// MaxFailures starts the block; anything else is given back.
func (t *throttle) settle(c counter, start time.Time, failed bool, now time.Time) counter {
	if c.pending == 0 || !c.start.Equal(start) {
		return c // another window by now: the reservation is gone
	}
	c.pending--
	if !failed {
		c.n--
		return c
	}
	if c.n-c.pending >= t.maxFailures && c.until.IsZero() {
		c.until = now.Add(t.block)
	}
	return c
}

func (t *throttle) putAddr(k netip.Prefix, as *addrState, now time.Time) {
	t.addrs.pruneFront(func(as *addrState) bool { return t.stale(as.counter, now) && as.idle(now, t.window) })
	t.addrs.put(k, as)
}

func (t *throttle) putPair(k trustKey, ps pairState, now time.Time) {
	t.pairs.pruneFront(func(ps pairState) bool { return t.stale(ps.counter, now) && now.Sub(ps.trusted) >= trustFor })
	t.pairs.put(k, ps)
}

// stale reports whether c holds no information any more.
func (t *throttle) stale(c counter, now time.Time) bool {
	return !now.Before(c.until) && now.Sub(c.start) >= t.window
}

// find returns the live slot holding fp, or nil.
func (as *addrState) find(fp uint64, gen uint32, now time.Time, window time.Duration) *fingerprint {
	for i := range as.recent {
		s := &as.recent[i]
		if s.sum == fp && s.seen != 0 && s.gen == gen && (s.pending || s.age(now) < window) {
			return s
		}
	}
	return nil
}

// free returns a slot for a new fingerprint: an unused or expired one, else
// the one seen longest ago.
func (as *addrState) free(now time.Time, window time.Duration) *fingerprint {
	oldest := &as.recent[0]
	for i := range as.recent {
		s := &as.recent[i]
		if s.seen == 0 || (!s.pending && s.age(now) >= window) {
			return s
		}
		if s.seen < oldest.seen {
			oldest = s
		}
	}
	return oldest
}

func (s *fingerprint) age(now time.Time) time.Duration { return time.Duration(now.UnixNano() - s.seen) }

// idle reports whether as remembers no live fingerprint.
func (as *addrState) idle(now time.Time, window time.Duration) bool {
	for _, s := range as.recent {
		if s.seen != 0 && (s.pending || s.age(now) < window) {
			return false
		}
	}
	return true
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
