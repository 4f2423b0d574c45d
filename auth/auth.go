package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
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
	// MaxConcurrent bounds how many password hashes are computed at once;
	// cache hits never wait for one. 0 means runtime.NumCPU().
	MaxConcurrent int
	// VerifyWait is how long a check that needs a hash may wait, for one of
	// the MaxConcurrent slots or for the throttle to have room to count it,
	// before it is answered StatusBusy. 0 means 1s:
	// long enough to ride out a short burst (a cost-10 bcrypt takes about
	// 50 ms, so a slot turns over ~20 times), short enough that a flood
	// does not pile up connections waiting behind it.
	VerifyWait time.Duration
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
	// StatusBusy: too many verifications are running; the credentials were
	// not checked. Retry after RetryAfter (503).
	StatusBusy
)

// ErrBusy is the error behind StatusBusy, for callers that want one.
var ErrBusy = errors.New("auth: too many password verifications in progress")

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
	case StatusBusy:
		return "busy"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of Check, safe to log as is.
type Result struct {
	Status Status
	// User is the verified user when Status is StatusOK. Otherwise it is the
	// claimed user name if that user exists in the file, else UnknownUser.
	User string
	// RetryAfter is how long a throttled or busy client should wait,
	// rounded up to whole seconds; zero unless Status is StatusThrottled
	// or StatusBusy.
	RetryAfter time.Duration
}

// Authenticator checks Basic proxy credentials against an htpasswd file.
// It is safe for concurrent use. A nil *Authenticator denies everything,
// so a wiring mistake fails closed.
type Authenticator struct {
	now func() time.Time
	mac *macer

	reloadMu sync.Mutex // serialises Update and Reload
	state    atomic.Pointer[state]
}

// state is everything Update replaces at once. Its parts that hold live
// data (throttle, slots) are carried from one state to the next.
type state struct {
	htpasswdPath, groupsPath string
	opts                     Options
	users                    *users
	groups                   map[string][]string // user -> sorted groups
	cache                    *verifyCache
	throttle                 *throttle // nil: off
	slots                    chan struct{}
}

// New loads the htpasswd file (required) and the groups file ("" for none).
func New(htpasswdPath, groupsPath string, opts Options) (*Authenticator, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("auth: cache key: %w", err)
	}
	a := &Authenticator{now: now, mac: newMacer(key[:])}
	if err := a.Update(htpasswdPath, groupsPath, opts); err != nil {
		return nil, err
	}
	return a, nil
}

// Update switches a to new files and options in place (opts.Now is
// ignored: the clock is New's). On any error nothing changes and the error,
// which names the file and line but never a hash or password, is returned.
// What did not change is kept: the throttle's state (a reload must not
// reset an attack's count, nor forget whom it trusts), and the cached
// verifications of every user whose stored hash is the same; a changed or
// removed password stops working at once. When the users changed at all,
// the throttle also forgets which credentials failed, since one may now be
// right.
func (a *Authenticator) Update(htpasswdPath, groupsPath string, opts Options) error {
	if a == nil {
		return errors.New("auth: Update of a nil Authenticator")
	}
	if htpasswdPath == "" {
		return errors.New("auth: no htpasswd file given")
	}
	if err := opts.Throttle.validate(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if opts.MaxConcurrent < 0 || opts.VerifyWait < 0 {
		return errors.New("auth: MaxConcurrent and VerifyWait must not be negative")
	}
	opts.Groups = copyGroups(opts.Groups) // Reload reads it later
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	u, err := loadHtpasswd(htpasswdPath, opts.AllowPlaintext)
	if err != nil {
		return err
	}
	g, err := loadGroups(groupsPath, opts.Groups)
	if err != nil {
		return err
	}
	st := &state{
		htpasswdPath: htpasswdPath, groupsPath: groupsPath, opts: opts, users: u, groups: g,
		cache: newVerifyCache(orDefault(opts.CacheTTL, 5*time.Minute), orDefault(opts.CacheSize, 10_000)),
	}
	old := a.state.Load()
	if old != nil && !old.opts.Throttle.Disabled && !opts.Throttle.Disabled {
		st.throttle = old.throttle
		st.throttle.configure(opts.Throttle)
	} else {
		st.throttle = newThrottle(opts.Throttle, a.now)
	}
	n := orDefault(opts.MaxConcurrent, runtime.NumCPU())
	if old != nil && cap(old.slots) == n {
		st.slots = old.slots
	} else {
		st.slots = make(chan struct{}, n)
	}
	if old != nil {
		same := func(user string) bool {
			s, ok := u.sums[user]
			return ok && s == old.users.sums[user]
		}
		st.cache.carry(old.cache, a.now(), same)
		if !maps.Equal(u.sums, old.users.sums) {
			st.throttle.forgetFailed()
		}
	}
	a.state.Store(st)
	return nil
}

// Reload re-reads the htpasswd and groups files with the current options;
// see Update.
func (a *Authenticator) Reload() error {
	if a == nil {
		return errors.New("auth: Reload of a nil Authenticator")
	}
	st := a.state.Load()
	return a.Update(st.htpasswdPath, st.groupsPath, st.opts)
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
//  1. No header gets StatusMissing, not counted: it is how every client
//     starts the 407 exchange, and a client cannot be trusted or refused
//     before it says who it is.
//  2. The throttle decides (see throttle): a blocked client gets
//     StatusThrottled without any verification or cache lookup, even with
//     a correct password; credentials that failed recently from this
//     address get StatusInvalid without being hashed again.
//  3. A fresh cache entry answers StatusOK in microseconds.
//  4. Otherwise a failure is counted in advance and the credentials are
//     verified: empty passwords never match; the hash waits for one of
//     Options.MaxConcurrent slots, and a check that gets none within
//     Options.VerifyWait is StatusBusy (not counted). A name absent from
//     the file is checked against another user's hash (result discarded)
//     so that it costs about as much as a known one and timing does not
//     reveal which names exist.
//  5. A success gives the counted failure back and is never delayed. Of
//     the failures, the one that reached the limit is answered
//     StatusThrottled, the rest StatusInvalid.
func (a *Authenticator) Check(client netip.Addr, header string) Result {
	if a == nil {
		return Result{Status: StatusInvalid, User: UnknownUser}
	}
	if strings.Trim(header, " \t") == "" {
		return Result{Status: StatusMissing, User: UnknownUser}
	}
	st := a.state.Load()
	user, pass, parsed := ParseBasic(header)
	name := UnknownUser
	if _, known := st.users.byName[user]; parsed && known {
		name = user
	}
	if !parsed {
		user, pass = "", "" // every malformed header is one and the same bad credential
	}
	k := a.mac.sum(user, pass)
	th := st.throttle
	refuse := func(d time.Duration, v verdict) Result {
		if v == verdictBlocked {
			return Result{Status: StatusThrottled, User: name, RetryAfter: d}
		}
		return Result{Status: StatusInvalid, User: name}
	}
	if _, d, v := th.begin(client, user, k, false); v != verdictVerify {
		return refuse(d, v)
	}
	if parsed && st.cache.hit(k, a.now()) {
		th.success(client, user)
		return Result{Status: StatusOK, User: user}
	}
	wait := orDefault(st.opts.VerifyWait, time.Second)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tk, d, v := th.begin(client, user, k, true)
	for v == verdictWait {
		select {
		case <-tk.settled:
		case <-deadline.C:
			return Result{Status: StatusBusy, User: name, RetryAfter: time.Second}
		}
		tk, d, v = th.begin(client, user, k, true)
	}
	if v != verdictVerify {
		return refuse(d, v)
	}
	settled := false
	defer func() {
		if !settled { // verify panicked: do not leave a reservation behind
			th.finish(tk, outcomeVoid)
		}
	}()
	ok, err := false, error(nil)
	if parsed {
		ok, err = a.verify(st, user, pass, k, deadline.C)
	}
	settled = true
	switch {
	case err != nil:
		th.finish(tk, outcomeVoid)
		return Result{Status: StatusBusy, User: name, RetryAfter: time.Second}
	case ok:
		th.finish(tk, outcomeOK)
		return Result{Status: StatusOK, User: user}
	}
	if d, blocked := th.finish(tk, outcomeFailed); blocked {
		return Result{Status: StatusThrottled, User: name, RetryAfter: d}
	}
	return Result{Status: StatusInvalid, User: name}
}

// verify reports whether pass is user's password in st, k being their
// macKey. It fails with ErrBusy if no hashing slot frees up before
// deadline fires.
func (a *Authenticator) verify(st *state, user, pass string, k macKey, deadline <-chan time.Time) (bool, error) {
	if pass == "" {
		return false, nil // never a wildcard, whatever the file says
	}
	m, known := st.users.byName[user]
	if !known {
		m = st.users.dummy
	}
	return st.cache.verify(k, user, a.now, func() (bool, error) {
		if !acquire(st.slots, deadline) {
			return false, ErrBusy
		}
		defer func() { <-st.slots }()
		ok := m.MatchesPassword(pass)
		return ok && known, nil
	})
}

// acquire takes a slot of sem, waiting until deadline fires.
func acquire(sem chan struct{}, deadline <-chan time.Time) bool {
	select {
	case sem <- struct{}{}:
		return true
	case <-deadline:
		return false
	}
}
