package limit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsegress/wsegress/proxy/listen"
)

// ErrExceeded is wrapped by every *Error, so errors.Is works on
// a refusal however it was wrapped on its way to the caller.
var ErrExceeded = errors.New("tunnel limit reached")

// Kind names one of the limits on tunnels. Its String is the label
// value used in metrics and the word used in 503 bodies.
type Kind int

// The limit kinds, in the order Acquire checks them.
const (
	KindGlobal   Kind = iota // --max-tunnels
	KindUser                 // --max-tunnels-per-user and overrides
	KindClientIP             // --max-tunnels-per-ip
	KindHost                 // --max-tunnels-per-host
	KindPending              // --max-pending (a Gate, not the Limiter)
	NumKinds
)

var kindNames = [NumKinds]string{"global", "user", "client_ip", "host", "pending"}

// String returns the kind's label: global, user, client_ip, host, pending.
func (k Kind) String() string {
	if k < 0 || k >= NumKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Error is returned when a slot could not be had. It wraps
// ErrExceeded. It names only the kind and number, never the user,
// client or host, so it is safe to log and to show to the client.
type Error struct {
	Kind   Kind          // the first full limit, in KindGlobal..KindHost order
	Limit  int           // that limit's value for this key
	Waited time.Duration // time spent queued; 0 when refused at once
}

// Error says which limit was hit, e.g. "tunnel limit reached: user limit 5".
func (e *Error) Error() string {
	if e.Waited > 0 {
		return fmt.Sprintf("%v: %s limit %d (waited %v)", ErrExceeded, e.Kind, e.Limit, e.Waited.Round(time.Millisecond))
	}
	return fmt.Sprintf("%v: %s limit %d", ErrExceeded, e.Kind, e.Limit)
}

// Unwrap returns ErrExceeded.
func (e *Error) Unwrap() error { return ErrExceeded }

// Config is the tunnel limits. A value <= 0 means unlimited for that
// kind, in the override maps too: an override of 0 lifts the cap for that
// user or group.
type Config struct {
	Global  int // tunnels in the whole proxy
	PerUser int // tunnels per authenticated user; anonymous clients have no per-user cap
	PerIP   int // tunnels per client IP
	PerHost int // tunnels per destination host

	// Users overrides PerUser for the named users (from the YAML config).
	// It takes precedence over Groups.
	Users map[string]int
	// Groups overrides PerUser for members of the named groups. A user in
	// several of them gets the largest (an unlimited one wins).
	Groups map[string]int
}

// Validate reports problems in the per-user and per-group overrides; the
// flag-set values are checked by Config.Validate.
func (lim Config) Validate() error {
	var errs []error
	for _, m := range []struct {
		what string
		m    map[string]int
	}{{"user", lim.Users}, {"group", lim.Groups}} {
		for name, n := range m.m {
			switch {
			case name == "":
				errs = append(errs, fmt.Errorf("tunnel limit for an empty %s name: remove the entry", m.what))
			case n < 0:
				errs = append(errs, fmt.Errorf("tunnel limit for %s %q is %d: use 0 for unlimited or a positive number", m.what, name, n))
			}
		}
	}
	return errors.Join(errs...)
}

// userLimit resolves the per-user cap for user: Users, else the largest of
// its Groups, else PerUser. Anonymous clients ("") have none.
func (lim Config) userLimit(user string, groups []string) int {
	if user == "" {
		return 0
	}
	if n, ok := lim.Users[user]; ok {
		return n
	}
	best, found := 0, false
	for _, g := range groups {
		n, ok := lim.Groups[g]
		if !ok {
			continue
		}
		if n <= 0 {
			return 0
		}
		if !found || n > best {
			best, found = n, true
		}
	}
	if found {
		return best
	}
	return lim.PerUser
}

// Key says whose slot a tunnel takes. A zero field takes no slot of that
// kind: an anonymous client (User "") has no per-user cap, an invalid
// ClientIP no per-IP cap, an empty Host no per-host cap.
type Key struct {
	User   string
	Groups []string // User's groups, for overrides. Retained while the slot is held; do not modify.
	// ClientIP is counted under its client key (listen.ClientKey): an
	// IPv4 address as itself (an IPv4-mapped IPv6 address as the IPv4
	// one), an IPv6 address as its /64, since one host usually holds a
	// whole /64. A zone is dropped.
	ClientIP netip.Addr
	// Host is the destination host as parsed (acl.Target.Host), compared
	// byte for byte.
	Host string
}

// ClientKey is the address a client's per-IP slots are counted under: the
// address of its listen.ClientKey prefix, so every address of an IPv6 /64
// is one client, as for --max-conns-per-ip and the auth throttle. An
// invalid address gives the zero Addr (no per-IP cap).
func ClientKey(ip netip.Addr) netip.Addr {
	p := listen.ClientKey(ip)
	if !p.IsValid() {
		return netip.Addr{}
	}
	return p.Addr()
}

// Limiter hands out tunnel slots under all applicable limits at once.
// A nil *Limiter is valid and unlimited; New always returns a live
// one (which counts usage even with no limits set), so SetLimits and
// Usage work after a reload that turns limits on.
//
// Waiters are served in arrival order among those the freed capacity
// can serve: a newer waiter never takes a slot that an older one can use,
// but a waiter still short of another limit (say its host is full) does
// not hold up waiters that only need the global slot it is not using.
type Limiter struct {
	mu     sync.Mutex // guards the following fields
	lim    Config
	global int
	users  map[string]userUse
	ips    map[netip.Addr]int
	hosts  map[string]int
	head   *waiter // oldest waiter
	tail   *waiter
	nwait  int
}

// userUse is one user's slot count and the groups last seen for it, so
// Usage and SetLimits can resolve the user's cap.
type userUse struct {
	n      int
	groups []string
}

// waitKey is a normalised Key plus the user cap resolved under l.lim.
type waitKey struct {
	Key
	userLimit int
}

// waiter is one queued Acquire. slot is set, and ready closed, by
// dispatch under l.mu when the waiter is served.
type waiter struct {
	k          waitKey
	ready      chan struct{}
	slot       *Slot
	prev, next *waiter
}

// New returns a limiter enforcing lim. It keeps a copy of the
// override maps.
func New(lim Config) *Limiter {
	l := &Limiter{
		users: make(map[string]userUse),
		ips:   make(map[netip.Addr]int),
		hosts: make(map[string]int),
	}
	l.lim = cloneConfig(lim)
	return l
}

func cloneConfig(lim Config) Config {
	lim.Users = maps.Clone(lim.Users)
	lim.Groups = maps.Clone(lim.Groups)
	return lim
}

// Acquire takes one slot for k under every applicable limit at once (all
// or nothing). If a limit is full it waits up to wait (0: no waiting) in
// arrival order, and returns ctx.Err() as soon as ctx ends, giving up its
// queue place at once. A refusal is a *Error naming the first full
// kind. The caller must Release the slot exactly once it is done with it;
// extra Releases do nothing. A nil Limiter returns a nil *Slot, whose
// Release also does nothing.
func (l *Limiter) Acquire(ctx context.Context, k Key, wait time.Duration) (*Slot, error) {
	if l == nil {
		return nil, nil
	}
	nk := waitKey{Key: k}
	nk.ClientIP = ClientKey(k.ClientIP)

	l.mu.Lock()
	nk.userLimit = l.lim.userLimit(nk.User, nk.Groups)
	kind, limit, full := l.firstFull(&nk)
	if !full {
		s := l.take(&nk)
		l.mu.Unlock()
		return s, nil
	}
	if wait <= 0 {
		l.mu.Unlock()
		return nil, &Error{Kind: kind, Limit: limit}
	}
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	start := time.Now()
	w := &waiter{k: nk, ready: make(chan struct{})}
	l.enqueue(w)
	l.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	var ctxDone bool
	select {
	case <-w.ready:
		w.slot.waited = time.Since(start)
		return w.slot, nil
	case <-timer.C:
	case <-ctx.Done():
		ctxDone = true
	}

	l.mu.Lock()
	if s := w.slot; s != nil {
		// Served while the timer or ctx fired. A timed-out waiter keeps
		// the slot; a cancelled one gives it to the next waiter.
		l.mu.Unlock()
		if ctxDone {
			s.Release()
			return nil, ctx.Err()
		}
		s.waited = time.Since(start)
		return s, nil
	}
	l.dequeue(w)
	kind, limit, _ = l.firstFull(&w.k)
	l.mu.Unlock()
	if ctxDone {
		return nil, ctx.Err()
	}
	return nil, &Error{Kind: kind, Limit: limit, Waited: time.Since(start)}
}

// firstFull reports the first limit, in kind order, that has no room for
// k. Usage above a lowered limit counts as full.
func (l *Limiter) firstFull(k *waitKey) (Kind, int, bool) {
	if g := l.lim.Global; g > 0 && l.global >= g {
		return KindGlobal, g, true
	}
	if n := k.userLimit; n > 0 && k.User != "" && l.users[k.User].n >= n {
		return KindUser, n, true
	}
	if n := l.lim.PerIP; n > 0 && k.ClientIP.IsValid() && l.ips[k.ClientIP] >= n {
		return KindClientIP, n, true
	}
	if n := l.lim.PerHost; n > 0 && k.Host != "" && l.hosts[k.Host] >= n {
		return KindHost, n, true
	}
	return 0, 0, false
}

// take counts a slot for k under every kind, limited or not, so a limit
// turned on by SetLimits sees the real usage.
func (l *Limiter) take(k *waitKey) *Slot {
	l.global++
	if k.User != "" {
		u := l.users[k.User]
		l.users[k.User] = userUse{n: u.n + 1, groups: k.Groups}
	}
	if k.ClientIP.IsValid() {
		l.ips[k.ClientIP]++
	}
	if k.Host != "" {
		l.hosts[k.Host]++
	}
	return &Slot{l: l, k: slotKey{user: k.User, ip: k.ClientIP, host: k.Host}}
}

// give undoes take, deleting keys that drop to zero so memory follows the
// tunnels open, not every client ever seen.
func (l *Limiter) give(k *slotKey) {
	l.global--
	if k.user != "" {
		if u := l.users[k.user]; u.n <= 1 {
			delete(l.users, k.user)
		} else {
			u.n--
			l.users[k.user] = u
		}
	}
	if k.ip.IsValid() {
		if n := l.ips[k.ip]; n <= 1 {
			delete(l.ips, k.ip)
		} else {
			l.ips[k.ip] = n - 1
		}
	}
	if k.host != "" {
		if n := l.hosts[k.host]; n <= 1 {
			delete(l.hosts, k.host)
		} else {
			l.hosts[k.host] = n - 1
		}
	}
}

func (l *Limiter) enqueue(w *waiter) {
	w.prev = l.tail
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	l.nwait++
}

func (l *Limiter) dequeue(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next = nil, nil
	l.nwait--
}

// dispatch serves, oldest first, every waiter that now fits. Serving only
// adds usage, so one pass suffices: a waiter skipped earlier in the pass
// cannot fit later in it.
func (l *Limiter) dispatch() {
	for w := l.head; w != nil; {
		if g := l.lim.Global; g > 0 && l.global >= g {
			return // nobody fits
		}
		next := w.next
		if _, _, full := l.firstFull(&w.k); !full {
			l.dequeue(w)
			w.slot = l.take(&w.k)
			close(w.ready)
		}
		w = next
	}
}

// Waiting reports how many Acquire calls are queued.
func (l *Limiter) Waiting() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nwait
}

// Full reports whether the global pool is at (or above) its limit, for a
// readiness check that should fail while new tunnels would be refused.
func (l *Limiter) Full() bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lim.Global > 0 && l.global >= l.lim.Global
}

// SetLimits replaces the limits (on SIGHUP). Lowering a limit never
// touches held slots; it only refuses new ones until usage drops below
// it. Raising one serves waiters at once.
func (l *Limiter) SetLimits(lim Config) {
	if l == nil {
		return
	}
	lim = cloneConfig(lim)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lim = lim
	for w := l.head; w != nil; w = w.next {
		w.k.userLimit = lim.userLimit(w.k.User, w.k.Groups)
	}
	l.dispatch()
}

// Slot is one held place in the pool. Release is idempotent and safe to
// call from any goroutine; a nil *Slot (from a nil Limiter) is valid.
type Slot struct {
	l        *Limiter
	k        slotKey
	waited   time.Duration
	released atomic.Bool
}

// slotKey is what a Slot must remember to give its counts back.
type slotKey struct {
	user string
	ip   netip.Addr
	host string
}

// Release gives the slot back and serves waiters it frees. Only the first
// call does anything.
func (s *Slot) Release() {
	if s == nil || !s.released.CompareAndSwap(false, true) {
		return
	}
	l := s.l
	l.mu.Lock()
	l.give(&s.k)
	if l.head != nil {
		l.dispatch()
	}
	l.mu.Unlock()
}

// Waited reports how long Acquire queued for this slot (0 if it did not),
// for the queue-wait histogram.
func (s *Slot) Waited() time.Duration {
	if s == nil {
		return 0
	}
	return s.waited
}
