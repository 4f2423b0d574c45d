package auth

import (
	"container/list"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"sync"
	"time"
)

// boundedMap is a map holding at most max entries, ordered by last put:
// put moves a key to the back and evicts from the front (the entry put
// longest ago) when full. Not safe for concurrent use.
type boundedMap[K comparable, V any] struct {
	max   int
	m     map[K]*list.Element
	order list.List // of *bmEntry[K, V]; front = put longest ago
}

type bmEntry[K comparable, V any] struct {
	key K
	val V
}

func newBoundedMap[K comparable, V any](max int) *boundedMap[K, V] {
	return &boundedMap[K, V]{max: max, m: make(map[K]*list.Element)}
}

func (b *boundedMap[K, V]) get(k K) (V, bool) {
	if e, ok := b.m[k]; ok {
		return e.Value.(*bmEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

func (b *boundedMap[K, V]) put(k K, v V) {
	if e, ok := b.m[k]; ok {
		e.Value.(*bmEntry[K, V]).val = v
		b.order.MoveToBack(e)
		return
	}
	for len(b.m) >= b.max && b.order.Len() > 0 {
		b.delete(b.order.Front().Value.(*bmEntry[K, V]).key)
	}
	b.m[k] = b.order.PushBack(&bmEntry[K, V]{key: k, val: v})
}

func (b *boundedMap[K, V]) delete(k K) {
	if e, ok := b.m[k]; ok {
		b.order.Remove(e)
		delete(b.m, k)
	}
}

// pruneFront deletes entries from the front while stale reports true, so
// idle entries go away without a background goroutine.
func (b *boundedMap[K, V]) pruneFront(stale func(V) bool) {
	for e := b.order.Front(); e != nil; e = b.order.Front() {
		be := e.Value.(*bmEntry[K, V])
		if !stale(be.val) {
			return
		}
		b.delete(be.key)
	}
}

func (b *boundedMap[K, V]) len() int { return len(b.m) }

// macKey is a cache key: HMAC-SHA256 of user, NUL, password under a
// per-process random key. The cache stores only these, so a memory dump
// yields no password, and without the key a MAC cannot even be tested
// offline against guesses. User names hold no NUL (validUser), so the
// encoding is unambiguous.
type macKey [sha256.Size]byte

// macer computes macKeys, reusing HMAC states (hmac.New allocates ~1 KiB).
type macer struct{ pool sync.Pool }

func newMacer(key []byte) *macer {
	k := append([]byte(nil), key...)
	return &macer{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}
}

func (m *macer) sum(user, pass string) macKey {
	h := m.pool.Get().(hash.Hash)
	h.Reset()
	io.WriteString(h, user)
	h.Write([]byte{0})
	io.WriteString(h, pass)
	var k macKey
	h.Sum(k[:0])
	m.pool.Put(h)
	return k
}

// verifyCache remembers successful verifications until a fixed expiry (not
// extended on use, so each credential is re-hashed at least every TTL), and
// lets concurrent checks of the same credentials share one hash computation:
// a browser opening twenty tunnels at once costs one bcrypt, not twenty.
// The sharing works with remembering turned off too (entries nil).
//
// One cache belongs to one loaded user table. A Reload builds a new one and
// copies over the entries of users whose hash did not change (carry), so a
// verification that started before a Reload cannot land in the new cache.
// Lookups are map lookups on a MAC nobody can choose, so their timing says
// nothing about stored secrets.
type verifyCache struct {
	ttl time.Duration

	mu       sync.Mutex                      // guards the following fields
	entries  *boundedMap[macKey, cacheEntry] // nil: remember nothing; front = oldest
	inflight map[macKey]*call
}

// cacheEntry is one remembered success.
type cacheEntry struct {
	exp  time.Time
	user string // whose hash it was checked against, for carry
}

// call is one in-flight verification that others may wait for.
type call struct {
	done chan struct{}
	ok   bool  // written before done is closed
	err  error // likewise
}

// newVerifyCache returns a cache; ttl <= 0 or size <= 0 remembers nothing.
func newVerifyCache(ttl time.Duration, size int) *verifyCache {
	c := &verifyCache{ttl: ttl, inflight: make(map[macKey]*call)}
	if ttl > 0 && size > 0 {
		c.entries = newBoundedMap[macKey, cacheEntry](size)
	}
	return c
}

// carry copies into c the fresh entries of old whose user keep accepts,
// oldest first, their expiry capped at c's TTL from now.
func (c *verifyCache) carry(old *verifyCache, now time.Time, keep func(user string) bool) {
	if c.entries == nil || old == nil {
		return
	}
	old.mu.Lock()
	defer old.mu.Unlock()
	if old.entries == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := old.entries.order.Front(); e != nil; e = e.Next() {
		be := e.Value.(*bmEntry[macKey, cacheEntry])
		if !now.Before(be.val.exp) || !keep(be.val.user) {
			continue
		}
		v := be.val
		if limit := now.Add(c.ttl); v.exp.After(limit) {
			v.exp = limit
		}
		c.entries.put(be.key, v)
	}
}

// hit reports whether a fresh entry for k exists.
func (c *verifyCache) hit(k macKey, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		return false
	}
	if e, ok := c.entries.get(k); ok {
		if now.Before(e.exp) {
			return true
		}
		c.entries.delete(k)
	}
	return false
}

// verify reports whether the credentials behind k, claimed for user, are
// valid: from the cache if a fresh entry exists, else by running check
// (once for all concurrent callers with the same k) and remembering a
// success. An error from check goes to every caller and is not remembered.
func (c *verifyCache) verify(k macKey, user string, now func() time.Time, check func() (bool, error)) (bool, error) {
	if c.hit(k, now()) {
		return true, nil
	}
	c.mu.Lock()
	if cl, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		<-cl.done
		return cl.ok, cl.err
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[k] = cl
	c.mu.Unlock()

	ok, err := false, errors.New("auth: verification panicked")
	// Deferred so that waiters are released even if check panics.
	defer func() {
		c.mu.Lock()
		delete(c.inflight, k)
		if ok && err == nil && c.entries != nil {
			t := now()
			c.entries.pruneFront(func(e cacheEntry) bool { return !t.Before(e.exp) })
			c.entries.put(k, cacheEntry{exp: t.Add(c.ttl), user: user})
		}
		c.mu.Unlock()
		cl.ok, cl.err = ok, err
		close(cl.done)
	}()
	ok, err = check()
	return ok, err
}

// len reports the number of cached entries (for tests).
func (c *verifyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		return 0
	}
	return c.entries.len()
}
