package proxy

import (
	"math"
	"sync/atomic"
	"syscall"
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

// fdsPerTunnel is what one established tunnel costs in descriptors: the
// client socket and the target socket. A relay that splices with io.Copy
// holds two more per direction while blocked (see PERF-NOTES.md); it would
// need 6 here.
const fdsPerTunnel = 2

// DefaultMaxTunnels derives a safe global tunnel limit from the process's
// open-file limit (RLIMIT_NOFILE), see maxTunnelsFor. It reads the soft
// limit: since Go 1.19 the runtime raises it to the hard limit (minus one)
// at start-up (syscall's init, go.dev/issue/46279), so the soft limit is
// what the process may really use, and where raising failed it is still
// the one that bites. If the limit cannot be read it assumes 1024.
func DefaultMaxTunnels() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return maxTunnelsFor(1024)
	}
	return maxTunnelsFor(rl.Cur)
}

// maxTunnelsFor is the formula behind DefaultMaxTunnels for nofile
// descriptors: reserve max(256, nofile/10) for listeners, the metrics
// server, DNS, logs and handshakes in progress, and give every tunnel 2
// of the rest:
//
//	(nofile - max(256, nofile/10)) / 2, at least 1
//
// For 1024 that is 384, for 20,000 it is 9,000, for 1,048,576 it is
// 471,859.
func maxTunnelsFor(nofile uint64) int {
	n := int64(min(nofile, math.MaxInt32))
	n = (n - max(256, n/10)) / fdsPerTunnel
	return int(max(n, 1))
}
