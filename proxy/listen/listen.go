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
	// MaxConns caps the client connections held at once, from accept to
	// Close, tunnels included. <= 0: unlimited.
	MaxConns int
	// MaxConnsPerIP caps them per client key (see ClientKey), keyed by the
	// real client address: the one from the PROXY header where one was
	// honoured. <= 0: unlimited.
	MaxConnsPerIP int
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

// Stats is a snapshot of the Listener's counts, for metrics.
type Stats struct {
	Conns    int // client connections held, from accept to Close
	MaxConns int // 0: unlimited
	// BusiestIP is the connection count of the client key holding the
	// most, BusiestKey that key.
	BusiestIP     int
	BusiestKey    netip.Prefix
	MaxConnsPerIP int // 0: unlimited
	// HeaderPending counts connections from trusted sources whose PROXY
	// header is still being read (they are in Conns too).
	HeaderPending int
	Refused       [numKinds]uint64 // by Kind
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
	trusted   []netip.Prefix
	timeout   time.Duration
	onRefuse  func(Refusal)
	ready     chan accepted
	done      chan struct{} // closed by shutdown
	closeOnce sync.Once
	wg        sync.WaitGroup
	refused   [numKinds]atomic.Uint64

	mu         sync.Mutex // guards the following fields
	maxConns   int
	maxPerIP   int
	conns      int
	perIP      map[netip.Prefix]int
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
		trusted:  append([]netip.Prefix(nil), cfg.ProxyFrom...),
		timeout:  cfg.HeaderTimeout,
		onRefuse: cfg.OnRefuse,
		ready:    make(chan accepted),
		done:     make(chan struct{}),
		maxConns: max(cfg.MaxConns, 0),
		maxPerIP: max(cfg.MaxConnsPerIP, 0),
		perIP:    make(map[netip.Prefix]int),
		pending:  make(map[net.Conn]struct{}),
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

// SetLimits replaces MaxConns and MaxConnsPerIP (on SIGHUP). Held conns
// are never closed; lowering a cap only refuses new ones until usage drops.
func (l *Listener) SetLimits(maxConns, maxConnsPerIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxConns, l.maxPerIP = max(maxConns, 0), max(maxConnsPerIP, 0)
}

// Stats returns a snapshot. It walks every client key held, so call it
// per scrape, not per connection.
func (l *Listener) Stats() Stats {
	var s Stats
	for k := range s.Refused {
		s.Refused[k] = l.refused[k].Load()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s.Conns, s.MaxConns, s.MaxConnsPerIP = l.conns, l.maxConns, l.maxPerIP
	s.HeaderPending = len(l.pending)
	for k, n := range l.perIP {
		if n > s.BusiestIP {
			s.BusiestIP, s.BusiestKey = n, k
		}
	}
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

// admit applies the global cap to a fresh conn, then either reads its
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
	if l.maxConns > 0 && l.conns >= l.maxConns {
		l.mu.Unlock()
		raw.Close()
		l.refuse(Refusal{Kind: KindConns, Remote: peer})
		return
	}
	l.conns++
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
// conn that already holds a global slot. It returns the wrapped conn, or
// nil after closing raw and giving the global slot back.
func (l *Listener) count(raw net.Conn, client, via net.Addr, buffered []byte) *conn {
	key := ClientKey(addrIP(client))
	l.mu.Lock()
	if key.IsValid() {
		if l.maxPerIP > 0 && l.perIP[key] >= l.maxPerIP {
			l.conns--
			l.mu.Unlock()
			raw.Close()
			l.refuse(Refusal{Kind: KindConnsPerIP, Remote: client, Via: via, Key: key})
			return nil
		}
		l.perIP[key]++
	}
	l.mu.Unlock()
	c := &conn{Conn: raw, l: l, key: key, remote: client, via: via, buf: buffered}
	c.buffered.Store(len(buffered) > 0)
	return c
}

// release gives back the slots of a conn that Accept returned (or was
// about to).
func (l *Listener) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conns--
	if key.IsValid() {
		if n := l.perIP[key]; n <= 1 {
			delete(l.perIP, key)
		} else {
			l.perIP[key] = n - 1
		}
	}
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
	if err != nil || closed {
		l.conns--
	}
	l.mu.Unlock()
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
