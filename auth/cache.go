package auth

import (
	"container/list"
	"crypto/hmac"
	"crypto/sha256"
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
// A nil *verifyCache caches nothing.
//
// One cache belongs to one loaded user table and is discarded with it, so
// a verification that started before a Reload cannot land in the new cache.
// Lookups are map lookups on a MAC nobody can choose, so their timing says
// nothing about stored secrets.
type verifyCache struct {
	ttl time.Duration

	mu       sync.Mutex                     // guards the following fields
	entries  *boundedMap[macKey, time.Time] // expiry; front = oldest
	inflight map[macKey]*call
}

// call is one in-flight verification that others may wait for.
type call struct {
	done chan struct{}
	ok   bool // written before done is closed
}

func newVerifyCache(ttl time.Duration, size int) *verifyCache {
	if ttl <= 0 || size <= 0 {
		return nil
	}
	return &verifyCache{
		ttl:      ttl,
		entries:  newBoundedMap[macKey, time.Time](size),
		inflight: make(map[macKey]*call),
	}
}

// verify reports whether the credentials behind k are valid: from the cache
// if a fresh entry exists, else by running check (once for all concurrent
// callers with the same k) and caching a success.
func (c *verifyCache) verify(k macKey, now func() time.Time, check func() bool) bool {
	if c == nil {
		return check()
	}
	c.mu.Lock()
	if exp, ok := c.entries.get(k); ok {
		if now().Before(exp) {
			c.mu.Unlock()
			return true
		}
		c.entries.delete(k)
	}
	if cl, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		<-cl.done
		return cl.ok
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[k] = cl
	c.mu.Unlock()

	ok := false
	// Deferred so that waiters are released even if check panics.
	defer func() {
		c.mu.Lock()
		delete(c.inflight, k)
		if ok {
			t := now()
			c.entries.pruneFront(func(exp time.Time) bool { return !t.Before(exp) })
			c.entries.put(k, t.Add(c.ttl))
		}
		c.mu.Unlock()
		cl.ok = ok
		close(cl.done)
	}()
	ok = check()
	return ok
}

// len reports the number of cached entries (for tests).
func (c *verifyCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries.len()
}
