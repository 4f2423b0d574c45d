package limit

import (
	"sync/atomic"
)

// Gate is a non-blocking counting semaphore for --max-pending: requests
// between accept and the tunnel's 200. A nil *Gate is unlimited and
// counts nothing; the zero Gate is unlimited but counts (for metrics)
// and can be given a limit later with SetLimit.
type Gate struct {
	limit atomic.Int64 // <= 0: unlimited
	inUse atomic.Int64
}

// NewGate returns a gate admitting n at once, or nil if n <= 0.
func NewGate(n int) *Gate {
	if n <= 0 {
		return nil
	}
	g := new(Gate)
	g.limit.Store(int64(n))
	return g
}

// TryEnter takes a place if one is free and reports whether it did. Each
// true must be paired with one Leave.
func (g *Gate) TryEnter() bool {
	if g == nil {
		return true
	}
	for {
		cur, lim := g.inUse.Load(), g.limit.Load()
		if lim > 0 && cur >= lim {
			return false
		}
		if g.inUse.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// Leave gives back a place taken by TryEnter.
func (g *Gate) Leave() {
	if g == nil {
		return
	}
	g.inUse.Add(-1)
}

// SetLimit changes the limit (n <= 0: unlimited). Places already taken are
// kept; lowering only refuses new ones until usage drops below n.
func (g *Gate) SetLimit(n int) {
	if g == nil {
		return
	}
	g.limit.Store(int64(max(n, 0)))
}

// Limit reports the current limit (0: unlimited).
func (g *Gate) Limit() int {
	if g == nil {
		return 0
	}
	return int(g.limit.Load())
}

// InUse reports how many places are taken.
func (g *Gate) InUse() int {
	if g == nil {
		return 0
	}
	return int(g.inUse.Load())
}

// Usage reports the gate as a KindPending entry for metrics.
func (g *Gate) Usage() Usage {
	return Usage{Kind: KindPending, InUse: g.InUse(), Capacity: g.Limit()}
}
