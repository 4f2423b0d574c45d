package listen

import (
	"net/netip"
	"sync"
)

// Caps counts client connections, in all and per client key (see
// ClientKey), and caps them. Every Listener given the same Caps counts
// against it, so the caps hold for the process, not per listening socket:
// a proxy listening on a plain and a TLS port (or on several sockets from
// systemd) gives them one Caps. The zero value counts and caps nothing;
// it is safe for concurrent use.
type Caps struct {
	mu       sync.Mutex // guards the following fields
	maxConns int
	maxPerIP int
	conns    int
	perIP    map[netip.Prefix]int
}

// NewCaps returns Caps with the given limits; see SetLimits.
func NewCaps(maxConns, maxConnsPerIP int) *Caps {
	c := new(Caps)
	c.SetLimits(maxConns, maxConnsPerIP)
	return c
}

// SetLimits sets the caps: maxConns on the client connections held at
// once, from accept to Close, tunnels included; maxConnsPerIP on those of
// one client key, keyed by the real client address (the one from the
// PROXY header where one was honoured). <= 0 means unlimited. Held conns
// are never closed: lowering a cap only refuses new ones until usage drops
// (on SIGHUP, say).
func (c *Caps) SetLimits(maxConns, maxConnsPerIP int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxConns, c.maxPerIP = max(maxConns, 0), max(maxConnsPerIP, 0)
}

// Usage is a snapshot of a Caps.
type Usage struct {
	Conns    int // client connections held, from accept to Close
	MaxConns int // 0: unlimited
	// BusiestIP is the connection count of the client key holding the
	// most, BusiestKey that key.
	BusiestIP     int
	BusiestKey    netip.Prefix
	MaxConnsPerIP int // 0: unlimited
}

// Usage returns a snapshot. It walks every client key held, so call it
// per scrape, not per connection.
func (c *Caps) Usage() Usage {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := Usage{Conns: c.conns, MaxConns: c.maxConns, MaxConnsPerIP: c.maxPerIP}
	for k, n := range c.perIP {
		if n > u.BusiestIP {
			u.BusiestIP, u.BusiestKey = n, k
		}
	}
	return u
}

// enter takes a connection slot, if the global cap allows.
func (c *Caps) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.maxConns > 0 && c.conns >= c.maxConns {
		return false
	}
	c.conns++
	return true
}

// enterKey takes a slot of key for a conn that holds a connection slot.
// When key's cap is full it gives the connection slot back and reports
// false. The zero key is not counted.
func (c *Caps) enterKey(key netip.Prefix) bool {
	if !key.IsValid() {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.maxPerIP > 0 && c.perIP[key] >= c.maxPerIP {
		c.conns--
		return false
	}
	if c.perIP == nil {
		c.perIP = make(map[netip.Prefix]int)
	}
	c.perIP[key]++
	return true
}

// leave gives back a connection slot and, for a valid key, a slot of key.
func (c *Caps) leave(key netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conns--
	if !key.IsValid() {
		return
	}
	if n := c.perIP[key]; n <= 1 {
		delete(c.perIP, key)
	} else {
		c.perIP[key] = n - 1
	}
}
