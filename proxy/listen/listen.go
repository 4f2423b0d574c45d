package listen

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind names why a connection was refused. Its String is the label value
// for metrics.
type Kind int

// The refusal kinds.
const (
	KindConns         Kind = iota // --max-conns was full
	KindConnsPerIP                // --max-conns-per-ip was full for the client's key
	KindProxyProtocol             // a trusted source sent no valid PROXY header in time
	numKinds
)

var kindNames = [numKinds]string{"conns", "conns_per_ip", "proxy_protocol_refused"}

// Kinds lists every refusal kind, for metrics that start each label at 0.
var Kinds = []Kind{KindConns, KindConnsPerIP, KindProxyProtocol}

// String returns the kind's label: conns, conns_per_ip, proxy_protocol_refused.
func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Refusal describes one connection the Listener closed instead of
// returning it.
type Refusal struct {
	Kind Kind
	// Remote is the client as far as it is known: the address from the
	// PROXY header for KindConnsPerIP, the socket peer otherwise.
	Remote net.Addr
	// Via is the balancer's address when Remote came from a PROXY header
	// (or the trusted peer that failed to send one); nil otherwise.
	Via net.Addr
	// Key is what KindConnsPerIP counted (a /32 or an IPv6 /64); zero for
	// the other kinds.
	Key netip.Prefix
	// Err says why a PROXY header was refused (KindProxyProtocol only).
	Err error
}

// Config is the Listener's configuration. The zero value caps nothing and
// trusts no PROXY header.
type Config struct {
	// Caps counts the Listener's connections and caps them, together with
	// those of every other Listener given the same Caps. If nil, the
	// Listener counts its own, with no cap.
	Caps *Caps
	// ProxyFrom lists the sources (balancers) whose PROXY protocol header
	// is honoured, and required: a connection from one of them is closed
	// unless it opens with a valid v1 or v2 header within HeaderTimeout.
	// From any other source the bytes are left alone, so a PROXY header
	// there is just a bad request to whoever serves the conn.
	ProxyFrom []netip.Prefix
	// HeaderTimeout bounds reading the PROXY header. Zero means 10s.
	HeaderTimeout time.Duration
	// OnRefuse, if non-nil, is called for every connection closed by the
	// Listener, from the accepting goroutine or a header reader. It must be
	// cheap and must not block.
	OnRefuse func(Refusal)
}

// ParseProxyFrom parses --proxy-protocol-from values: CIDRs or bare
// addresses (a bare address means that host only). It reports every bad
// entry at once.
func ParseProxyFrom(values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, v := range values {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if p, err := netip.ParsePrefix(v); err == nil {
			if p.Addr().Is4In6() {
				if p.Bits() < 96 {
					errs = append(errs, fmt.Errorf("--proxy-protocol-from %q: write IPv4 ranges as IPv4 CIDRs", v))
					continue
				}
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			if p != p.Masked() {
				errs = append(errs, fmt.Errorf("--proxy-protocol-from %q has host bits set: write %q", v, p.Masked()))
				continue
			}
			out = append(out, p)
			continue
		}
		ip, err := netip.ParseAddr(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--proxy-protocol-from %q is neither a CIDR nor an IP address: write e.g. 10.0.0.0/8", v))
			continue
		}
		ip = ip.Unmap().WithZone("")
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, errors.Join(errs...)
}

// Stats is a snapshot of a Listener, for metrics and tests.
type Stats struct {
	// Usage is that of the Listener's Caps: the connections of every
	// Listener sharing it.
	Usage
	// HeaderPending counts this Listener's connections from trusted
	// sources whose PROXY header is still being read (they are in Conns
	// too).
	HeaderPending int
	Refused       [numKinds]uint64 // by Kind, by this Listener
}

// Listener wraps a net.Listener; see Config. Accept returns only conns
// that passed every check; the others are closed at once and reported
// through OnRefuse, and Accept goes on waiting, so a refusal is never an
// error that makes http.Server back off for everyone.
//
// A background goroutine accepts from the wrapped listener, and PROXY
// headers are read by a goroutine per trusted connection with a deadline,
// so one slow client never holds up Accept. Close stops them all and
// waits for them.
type Listener struct {
	ln        net.Listener
	caps      *Caps
	trusted   []netip.Prefix
	timeout   time.Duration
	onRefuse  func(Refusal)
	ready     chan accepted
	done      chan struct{} // closed by shutdown
	closeOnce sync.Once
	wg        sync.WaitGroup
	refused   [numKinds]atomic.Uint64

	mu         sync.Mutex            // guards the following fields
	pending    map[net.Conn]struct{} // trusted conns whose header is being read
	closed     bool
	acceptErr  error // why the accept loop stopped
	closeError error
}

var _ net.Listener = (*Listener)(nil)

// accepted is what the accept loop or a header reader hands to Accept.
type accepted struct {
	c   net.Conn
	err error
}

// New wraps ln and starts accepting from it at once. The caller must Close
// the Listener (http.Server.Serve does when it returns); that closes ln.
func New(ln net.Listener, cfg Config) *Listener {
	l := &Listener{
		ln:       ln,
		caps:     cfg.Caps,
		trusted:  append([]netip.Prefix(nil), cfg.ProxyFrom...),
		timeout:  cfg.HeaderTimeout,
		onRefuse: cfg.OnRefuse,
		ready:    make(chan accepted),
		done:     make(chan struct{}),
		pending:  make(map[net.Conn]struct{}),
	}
	if l.caps == nil {
		l.caps = new(Caps)
	}
	if l.timeout <= 0 {
		l.timeout = 10 * time.Second
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept waits for the next connection that passed every check. Its
// RemoteAddr is the real client (from the PROXY header where one was
// honoured); Via tells the balancer. Closing it gives its slots back.
// After Close, or once the wrapped listener fails for good, Accept returns
// that error.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case a := <-l.ready:
		return a.c, a.err
	case <-l.done:
		l.mu.Lock()
		err := l.acceptErr
		l.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return nil, err
	}
}

// Close closes the wrapped listener and every connection whose PROXY
// header is still being read, and waits for the Listener's goroutines.
// Conns already returned by Accept belong to the caller and stay open.
func (l *Listener) Close() error {
	l.shutdown(nil)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closeError
}

// Addr returns the wrapped listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Stats returns a snapshot. Like Caps.Usage it walks every client key
// held, so call it per scrape, not per connection.
func (l *Listener) Stats() Stats {
	s := Stats{Usage: l.caps.Usage()}
	for k := range s.Refused {
		s.Refused[k] = l.refused[k].Load()
	}
	l.mu.Lock()
	s.HeaderPending = len(l.pending)
	l.mu.Unlock()
	return s
}

// shutdown stops the Listener once: it closes ln and every conn whose
// header is being read. err is why the accept loop stopped (nil: Close).
func (l *Listener) shutdown(err error) {
	l.closeOnce.Do(func() {
		cerr := l.ln.Close()
		l.mu.Lock()
		l.closed, l.acceptErr, l.closeError = true, err, cerr
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
		close(l.done)
	})
}

// acceptLoop accepts from ln until it fails for good. A temporary error
// (EMFILE, say) is handed to Accept so that http.Server backs off as it
// would without this wrapper; the next accept waits for that.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck // http.Server decides on Temporary too
				if !l.deliver(accepted{err: err}) {
					return
				}
				continue
			}
			l.shutdown(err)
			return
		}
		l.admit(c)
	}
}

// admit applies the connection cap to a fresh conn, then either reads its
// PROXY header in a goroutine (trusted source) or applies the per-IP cap
// and hands it to Accept.
func (l *Listener) admit(raw net.Conn) {
	peer := raw.RemoteAddr()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		raw.Close()
		return
	}
	if !l.caps.enter() {
		l.mu.Unlock()
		raw.Close()
		l.refuse(Refusal{Kind: KindConns, Remote: peer})
		return
	}
	if l.isTrusted(addrIP(peer)) {
		l.pending[raw] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.readHeader(raw)
		return
	}
	l.mu.Unlock()
	if c := l.count(raw, peer, nil, nil); c != nil {
		l.deliver(accepted{c: c})
	}
}

func (l *Listener) isTrusted(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// count applies the per-IP cap for client, the real client address, to a
// conn that already holds a connection slot. It returns the wrapped conn,
// or nil after closing raw and giving the connection slot back.
func (l *Listener) count(raw net.Conn, client, via net.Addr, buffered []byte) *conn {
	key := ClientKey(addrIP(client))
	if !l.caps.enterKey(key) {
		raw.Close()
		l.refuse(Refusal{Kind: KindConnsPerIP, Remote: client, Via: via, Key: key})
		return nil
	}
	c := &conn{Conn: raw, caps: l.caps, key: key, remote: client, via: via, buf: buffered}
	c.buffered.Store(len(buffered) > 0)
	return c
}

// deliver hands a to Accept, or closes a's conn if the Listener is closed
// first. It reports whether Accept took it.
func (l *Listener) deliver(a accepted) bool {
	select {
	case l.ready <- a:
		return true
	case <-l.done:
		if a.c != nil {
			a.c.Close()
		}
		return false
	}
}

func (l *Listener) refuse(r Refusal) {
	l.refused[r.Kind].Add(1)
	if l.onRefuse != nil {
		l.onRefuse(r)
	}
}

// readHeader reads a trusted conn's PROXY header, bounded by the header
// timeout, then counts it per IP under the client address from the header
// and hands it to Accept. Without a valid header the conn is closed.
func (l *Listener) readHeader(raw net.Conn) {
	defer l.wg.Done()
	br := bufio.NewReaderSize(raw, headerBufSize)
	client, err := decide(raw, br, l.timeout)

	l.mu.Lock()
	delete(l.pending, raw)
	closed := l.closed
	l.mu.Unlock()
	if err != nil || closed {
		l.caps.leave(netip.Prefix{})
	}
	if closed {
		raw.Close()
		return
	}
	peer := raw.RemoteAddr()
	if err != nil {
		raw.Close()
		l.refuse(Refusal{Kind: KindProxyProtocol, Remote: peer, Via: peer, Err: err})
		return
	}
	var buffered []byte
	if n := br.Buffered(); n > 0 {
		buffered, _ = br.Peek(n)
		buffered = append([]byte(nil), buffered...)
	}
	if c := l.count(raw, client, peer, buffered); c != nil {
		l.deliver(accepted{c: c})
	}
}
