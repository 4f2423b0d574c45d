package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// UnknownUser stands in for a user name that is not in the htpasswd file,
// so that logs never carry what a client typed (it may be a password typed
// into the wrong field) or the raw header.
const UnknownUser = "-unknown-"

// Options configures an Authenticator. The zero value is the safe default.
type Options struct {
	// AllowPlaintext accepts plaintext htpasswd entries (htpasswd -p, or
	// "{PLAIN}secret"). If false, such an entry is a load error naming the
	// user and line.
	AllowPlaintext bool
	// CacheTTL is how long a successful verification is remembered. 0 means
	// 5 minutes; negative turns the cache off.
	CacheTTL time.Duration
	// CacheSize bounds the cached verifications; the oldest is evicted.
	// 0 means 10,000; negative turns the cache off.
	CacheSize int
	// Throttle configures the brute-force throttle (on by default).
	Throttle ThrottleConfig
	// Groups, if non-nil, maps group names to users (from the YAML config);
	// it is merged with the groups file.
	Groups map[string][]string
	// Now, if non-nil, is the clock (for tests). If nil, time.Now is used.
	Now func() time.Time
}

// Status is the outcome of Check. The zero value is StatusInvalid, so a
// zero Result denies.
type Status int

const (
	// StatusInvalid: malformed header, or wrong or unknown credentials (407).
	StatusInvalid Status = iota
	// StatusMissing: no credentials were sent (407, the normal first step).
	StatusMissing
	// StatusThrottled: too many failures; retry after RetryAfter (429).
	StatusThrottled
	// StatusOK: the credentials are valid.
	StatusOK
)

// String returns a lowercase name for logs and metrics labels.
func (s Status) String() string {
	switch s {
	case StatusInvalid:
		return "invalid"
	case StatusMissing:
		return "missing"
	case StatusThrottled:
		return "throttled"
	case StatusOK:
		return "ok"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of Check, safe to log as is.
type Result struct {
	Status Status
	// User is the verified user when Status is StatusOK. Otherwise it is the
	// claimed user name if that user exists in the file, else UnknownUser.
	User string
	// RetryAfter is how long a throttled client should wait, rounded up to
	// whole seconds; zero unless Status is StatusThrottled.
	RetryAfter time.Duration
}

// Authenticator checks Basic proxy credentials against an htpasswd file.
// It is safe for concurrent use. A nil *Authenticator denies everything,
// so a wiring mistake fails closed.
type Authenticator struct {
	htpasswdPath, groupsPath string
	opts                     Options
	now                      func() time.Time
	mac                      *macer
	throttle                 *throttle // nil: off

	reloadMu sync.Mutex // serialises Reload
	state    atomic.Pointer[state]
}

// state is everything Reload replaces at once.
type state struct {
	users  *users
	groups map[string][]string // user -> sorted groups
	cache  *verifyCache        // nil: off
}

// New loads the htpasswd file (required) and the groups file ("" for none).
func New(htpasswdPath, groupsPath string, opts Options) (*Authenticator, error) {
	if htpasswdPath == "" {
		return nil, errors.New("auth: no htpasswd file given")
	}
	if err := opts.Throttle.validate(); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	opts.Groups = copyGroups(opts.Groups) // Reload reads it later
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("auth: cache key: %w", err)
	}
	a := &Authenticator{
		htpasswdPath: htpasswdPath,
		groupsPath:   groupsPath,
		opts:         opts,
		now:          now,
		mac:          newMacer(key[:]),
		throttle:     newThrottle(opts.Throttle, now),
	}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Reload re-reads the htpasswd and groups files. On any error it keeps the
// old users and groups and returns the error, which names the file and line
// but never a hash or password. On success it also drops the verification
// cache, so a changed or removed password stops working at once. Throttle
// state survives: a reload must not reset an attack's count.
func (a *Authenticator) Reload() error {
	if a == nil {
		return errors.New("auth: Reload of a nil Authenticator")
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	u, err := loadHtpasswd(a.htpasswdPath, a.opts.AllowPlaintext)
	if err != nil {
		return err
	}
	g, err := loadGroups(a.groupsPath, a.opts.Groups)
	if err != nil {
		return err
	}
	ttl := orDefault(a.opts.CacheTTL, 5*time.Minute)
	size := orDefault(a.opts.CacheSize, 10_000)
	a.state.Store(&state{users: u, groups: g, cache: newVerifyCache(ttl, size)})
	return nil
}

// Users reports how many users are loaded.
func (a *Authenticator) Users() int {
	if a == nil {
		return 0
	}
	return len(a.state.Load().users.byName)
}

// Groups returns the sorted groups user belongs to, or nil. The caller may
// modify the slice.
func (a *Authenticator) Groups(user string) []string {
	if a == nil {
		return nil
	}
	return slices.Clone(a.state.Load().groups[user])
}

func copyGroups(g map[string][]string) map[string][]string {
	if g == nil {
		return nil
	}
	out := make(map[string][]string, len(g))
	for k, v := range g {
		out[k] = slices.Clone(v)
	}
	return out
}

// Check verifies the Proxy-Authorization value header sent by client, the
// peer's address (an invalid Addr shares one throttle counter with all
// other invalid ones). In order:
//
//  1. A client address blocked by the throttle gets StatusThrottled without
//     any verification, even with a correct password.
//  2. No header gets StatusMissing and is not counted as a failure: it is
//     how every client starts the 407 exchange.
//  3. A user name under a per-user block gets StatusThrottled, unverified,
//     unless this address authenticated as that user recently (see
//     ThrottleConfig and throttle for why).
//  4. The credentials are verified: empty passwords never match; a fresh
//     cache entry answers in microseconds; otherwise the hash is computed.
//     A name absent from the file is checked against another user's hash
//     (result discarded) so that it costs about as much as a known one and
//     timing does not reveal which names exist.
//  5. A failure is counted against the address and the claimed name; the
//     one that reaches the limit is answered StatusThrottled, the rest
//     StatusInvalid. A success is never delayed.
func (a *Authenticator) Check(client netip.Addr, header string) Result {
	if a == nil {
		return Result{Status: StatusInvalid, User: UnknownUser}
	}
	st := a.state.Load()
	user, pass, parsed := ParseBasic(header)
	name := UnknownUser
	if _, known := st.users.byName[user]; parsed && known {
		name = user
	}
	if d, blocked := a.throttle.addrBlocked(client); blocked {
		return Result{Status: StatusThrottled, User: name, RetryAfter: d}
	}
	if strings.Trim(header, " \t") == "" {
		return Result{Status: StatusMissing, User: UnknownUser}
	}
	if parsed {
		if d, blocked := a.throttle.userBlocked(user, client); blocked {
			return Result{Status: StatusThrottled, User: name, RetryAfter: d}
		}
		if a.verify(st, user, pass) {
			a.throttle.success(client, user)
			return Result{Status: StatusOK, User: user}
		}
	}
	if d, blocked := a.throttle.failure(client, user); blocked {
		return Result{Status: StatusThrottled, User: name, RetryAfter: d}
	}
	return Result{Status: StatusInvalid, User: name}
}

// verify reports whether pass is user's password in st.
func (a *Authenticator) verify(st *state, user, pass string) bool {
	if pass == "" {
		return false // never a wildcard, whatever the file says
	}
	m, ok := st.users.byName[user]
	if !ok {
		st.users.dummy.MatchesPassword(pass)
		return false
	}
	if st.cache == nil {
		return m.MatchesPassword(pass)
	}
	return st.cache.verify(a.mac.sum(user, pass), a.now, func() bool {
		return m.MatchesPassword(pass)
	})
}
