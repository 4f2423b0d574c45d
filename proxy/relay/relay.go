package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Relay copies bytes verbatim between a client and a target connection. The
// zero value is ready to use. A Relay may be shared by many tunnels, and
// should be: besides its settings it keeps a small cache of spare buffers and
// pipes for all of them. A Relay must not be copied after first use.
//
// The relay is built for two loads. Most tunnels sit idle for hours, so a
// direction waiting for data holds no buffer and no pipe: on Linux it waits
// on the socket itself and borrows from the Relay only once data is there,
// so an idle tunnel costs its two sockets and no goroutine (its directions
// park in an epoll set, see Start; off Linux, two parked goroutines). Small
// frames move with one read and one write through a 32 KiB buffer (on Linux
// the epoll loop's own), the cheapest way on loopback. A read that fills the
// buffer means bulk: if both conns are sockets the relay can reach (a
// *net.TCPConn, or any conn with SyscallConn and CloseWrite that buffers
// nothing in user space), bulk moves with splice(2) through a pooled pipe,
// which a direction waiting for room gives back after a short while. Other conns (a wrapper from an
// upstream dialer, any conn off Linux) are copied through the pooled buffers
// with the same semantics; a direction reading from such a conn holds its
// buffer while it waits, since nothing tells it when data is ready.
type Relay struct {
	// IdleTimeout, if positive, ends the tunnel when no byte has moved in
	// either direction for that long: activity in one direction keeps both
	// alive, and a write blocked on a peer that does not read is not
	// activity. Zero means no idle timeout (WebSockets are long-lived).
	IdleTimeout time.Duration

	// WriteTimeout, if positive, ends the tunnel when a destination accepted
	// no byte for that long while bytes were waiting for it (a peer that
	// stopped reading), with EndWriteTimeout. A stalled direction holds a
	// buffer with the waiting bytes, never a pipe. Zero means no limit.
	WriteTimeout time.Duration

	// OnBytes, if non-nil, is called after bytes were moved (up is
	// client->target), chunk by chunk, so metrics count long-lived tunnels
	// as they go. Both directions call it concurrently; it must be cheap
	// and must not block.
	OnBytes func(up bool, n int64)

	// pipeSize is the pipe capacity asked of the kernel for splicing; zero
	// means defaultPipeSize. Benchmarks compare sizes through it.
	pipeSize int
	// noPark keeps every tunnel on the goroutine path, so that benchmarks
	// can compare it with the parked one in the same run.
	noPark bool

	once   sync.Once
	spares *loanCache
}

// EndReason says why a tunnel ended. The set is fixed; values are stable
// strings for logs and metric labels.
type EndReason string

const (
	// EndClientClosed: both directions ended cleanly (each EOF was passed
	// on with CloseWrite) and the client closed its write half first.
	EndClientClosed EndReason = "client_closed"
	// EndTargetClosed: as EndClientClosed, with the target first.
	EndTargetClosed EndReason = "target_closed"
	// EndClientReset: the client conn failed with a reset, an abort or a
	// broken pipe: the client vanished, or closed with data still unread.
	EndClientReset EndReason = "client_reset"
	// EndTargetReset: as EndClientReset, on the target conn.
	EndTargetReset EndReason = "target_reset"
	// EndIdleTimeout: Relay.IdleTimeout passed with no byte moved either way.
	EndIdleTimeout EndReason = "idle_timeout"
	// EndWriteTimeout: Relay.WriteTimeout passed while bytes waited for a
	// destination that accepted none of them.
	EndWriteTimeout EndReason = "write_timeout"
	// EndCanceled: the context passed to Run was done.
	EndCanceled EndReason = "canceled"
	// EndError: any other failure; Result.Err names the side and
	// operation.
	EndError EndReason = "error"
	// EndPanic: copying panicked; the tunnel was closed and Result.Err is
	// a *PanicError with the stack.
	EndPanic EndReason = "panic"
)

// PanicError is the Err of a Result whose Reason is EndPanic: a panic in
// the relay, recovered so that it ends one tunnel and not the process.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's stack
}

func (e *PanicError) Error() string { return fmt.Sprintf("relay panic: %v", e.Value) }

// ender is what catchPanic reports a recovered panic to.
type ender interface {
	end(reason EndReason, err error)
}

// endFunc adapts a function to ender.
type endFunc func(reason EndReason, err error)

func (f endFunc) end(reason EndReason, err error) { f(reason, err) }

// catchPanic is the one place the relay recovers panics: deferred at the
// top of every goroutine that copies, it ends the tunnel with EndPanic and
// the stack instead of crashing the process.
func catchPanic(e ender) {
	if p := recover(); p != nil {
		e.end(EndPanic, &PanicError{Value: p, Stack: debug.Stack()})
	}
}

// Result reports how a tunnel went.
type Result struct {
	// Up and Down count bytes written to the target and to the client.
	Up, Down int64
	Reason   EndReason
	// Err is the first error, nil when both directions ended with EOF. It
	// names side and operation ("read target: ..."), wraps
	// os.ErrDeadlineExceeded for EndIdleTimeout and is context.Cause(ctx)
	// for EndCanceled.
	Err error
}

// bufSize is the size of the pooled buffers of the copy fallback.
const bufSize = 32 << 10

// Run copies in both directions until both directions have ended or ctx is
// done, then closes both conns. Half-close: when one side ends its write half
// (EOF), Run passes it on with CloseWrite to the other side and keeps the
// other direction flowing until it ends too; a conn without CloseWrite keeps
// its write half open until the tunnel ends, as in net/http/httputil. A reset
// or error on either side ends the whole tunnel promptly (both conns closed),
// and so do ctx and the idle timeout.
//
// Run owns the conns' deadlines: it clears any left over from a handshake
// and sets its own for the idle timeout. The caller must have drained any
// bytes it buffered from client (a hijacked bufio.Reader) before calling Run.
// Run is Start plus a wait for its result.
func (r *Relay) Run(ctx context.Context, client, target net.Conn) Result {
	ch := make(chan Result, 1)
	r.Start(ctx, client, target, func(res Result) { ch <- res })
	return <-ch
}

// Start relays as Run does but returns at once; done is called exactly once,
// from some goroutine (possibly the caller's, before Start returns, if ctx
// is already done), after both conns are closed, with what Run would have
// returned. A panic while copying ends the tunnel with EndPanic and the
// panic in Err instead of crashing the process.
//
// On Linux, when both conns expose their sockets (as for the splice path),
// a tunnel holds no goroutine of its own: both directions are parked in one
// of the Relay's epoll loops (one per CPU), which moves small frames itself
// as their sources become readable, one read and one write each. A goroutine
// is started for a direction only for bulk or for a write that would block;
// it copies until the source has nothing more and parks the direction again.
// Goroutine stacks would otherwise dominate what an idle tunnel costs. Other
// conns take two goroutines per tunnel, as Run always did.
//
// Closing client or target from outside is not a way to end a parked
// tunnel: a closed socket leaves the epoll set without an event, so done
// would never be called. Cancel ctx instead; the relay then closes both.
func (r *Relay) Start(ctx context.Context, client, target net.Conn, done func(Result)) {
	if r.startParked(ctx, client, target, done) {
		return
	}
	go func() {
		var res Result
		defer func() { done(res) }()
		// A panic outside the copiers (which catch their own) still
		// closes both conns and reports.
		defer catchPanic(endFunc(func(reason EndReason, err error) {
			res = Result{Reason: reason, Err: err}
			_ = client.Close()
			_ = target.Close()
		}))
		res = r.runGoroutines(ctx, client, target)
	}()
}

// newTunnel returns the state of one tunnel between client and target.
func (r *Relay) newTunnel(client, target net.Conn) *tunnel {
	t := &tunnel{
		spares:  r.getSpares(),
		idle:    r.IdleTimeout,
		wt:      r.WriteTimeout,
		onBytes: r.OnBytes,
		start:   time.Now(),
		client:  client,
		target:  target,
	}
	t.up = copier{t: t, up: true, src: client, dst: target}
	t.down = copier{t: t, src: target, dst: client}
	t.up.init()
	t.down.init()
	return t
}

// runGoroutines is the portable relay: the calling goroutine runs one
// direction and exactly one more goroutine the other; it returns only after
// both have finished.
func (r *Relay) runGoroutines(ctx context.Context, client, target net.Conn) Result {
	t := r.newTunnel(client, target)

	var deadline time.Time // zero: none, clearing any left from the handshake
	if t.idle > 0 {
		deadline = t.start.Add(t.idle)
	}
	_ = client.SetDeadline(deadline) // a failure shows up on the first read or write
	_ = target.SetDeadline(deadline)

	// AfterFunc closes the conns from its own goroutine, which wakes both
	// copiers; Run waits for it so that nothing outlives Run.
	canceled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(canceled)
		t.end(EndCanceled, context.Cause(ctx))
	})
	var wg sync.WaitGroup
	wg.Go(func() { t.runSafely(&t.down) })
	t.runSafely(&t.up)
	wg.Wait()
	if !stop() {
		<-canceled
	}
	_ = client.Close()
	_ = target.Close()
	return t.result()
}

// getSpares returns the cache shared by the Relay's tunnels, made on first use.
func (r *Relay) getSpares() *loanCache {
	r.once.Do(func() {
		s := &loanCache{pipes: newSplicePipes(r.pipeSize), park: newParker()}
		s.bufs.New = func() any {
			b := make([]byte, bufSize)
			return &b
		}
		// Spare pipes are file descriptors, which the GC does not close:
		// close them once the Relay and all its tunnels are gone.
		runtime.AddCleanup(s, (*splicePipes).closeAll, s.pipes)
		r.spares = s
	})
	return r.spares
}

// loanCache is what a Relay lends to its tunnels while bytes move.
type loanCache struct {
	bufs  sync.Pool // *[]byte of bufSize bytes
	pipes *splicePipes
	park  *parker // the epoll set of parked directions (Linux)
}

// tunnel is the state of one tunnel.
type tunnel struct {
	spares   *loanCache
	idle     time.Duration
	wt       time.Duration // write timeout, 0: none
	onBytes  func(up bool, n int64)
	start    time.Time
	last     atomic.Int64 // when a byte last moved, as time since start (monotonic)
	client   net.Conn
	target   net.Conn
	up, down copier

	mu          sync.Mutex // guards the following fields
	reason      EndReason  // set by the first end; "" while the tunnel is whole
	err         error
	firstClosed EndReason // who closed a write half first, for a clean end
}

// touch records that bytes moved, for the idle timeout.
func (t *tunnel) touch() {
	if t.idle > 0 {
		t.last.Store(int64(time.Since(t.start)))
	}
}

// end records why the tunnel ends, unless a reason is already recorded, and
// closes both conns, which wakes whichever copier is still waiting. The
// reason is recorded before the close so that the errors the close causes
// are never taken for the cause.
func (t *tunnel) end(reason EndReason, err error) {
	t.mu.Lock()
	if t.reason == "" {
		t.reason, t.err = reason, err
	}
	t.mu.Unlock()
	_ = t.client.Close()
	_ = t.target.Close()
}

// runSafely runs one direction; a panic in it ends the tunnel (both conns
// closed, Reason EndPanic) instead of the process, so that the other
// direction, the wait and the cancel handler all wind down as usual.
func (t *tunnel) runSafely(c *copier) {
	defer catchPanic(t)
	c.run()
}

// sawEOF records that a side closed its write half. It is called before the
// EOF is passed on, so that the order recorded is the peers' order and not
// that of the copiers' goroutines.
func (t *tunnel) sawEOF(c *copier) {
	t.mu.Lock()
	if t.firstClosed == "" {
		t.firstClosed = EndTargetClosed
		if c.up {
			t.firstClosed = EndClientClosed
		}
	}
	t.mu.Unlock()
}

func (t *tunnel) reasonFor(err error) EndReason {
	var re *sideError
	var wte *writeTimeoutError
	switch {
	case errors.As(err, &wte):
		return EndWriteTimeout
	case t.idle > 0 && errors.Is(err, os.ErrDeadlineExceeded):
		return EndIdleTimeout
	case errors.As(err, &re) && isPeerReset(err):
		if re.client {
			return EndClientReset
		}
		return EndTargetReset
	}
	return EndError
}

func (t *tunnel) result() Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := Result{Up: t.up.n, Down: t.down.n, Reason: t.reason, Err: t.err}
	if res.Reason == "" {
		res.Reason = t.firstClosed // both directions ended cleanly
	}
	return res
}

// isPeerReset reports whether err means the peer is gone rather than done:
// it reset the connection, or closed it under data we were still sending.
func isPeerReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// sideError says which conn failed, and in which operation.
type sideError struct {
	op     string // "read", "write" or "close write"
	client bool   // the client conn failed, else the target conn
	err    error
}

func (e *sideError) Error() string {
	side := "target"
	if e.client {
		side = "client"
	}
	return e.op + " " + side + ": " + e.err.Error()
}

func (e *sideError) Unwrap() error { return e.err }

// copier moves one direction of a tunnel: src to dst. Its methods are
// named so that goroutine dumps show what each tunnel is doing.
type copier struct {
	t        *tunnel
	up       bool // client -> target
	src, dst net.Conn
	n        int64    // bytes written to dst
	sys      sysState // platform state for waiting and splicing
}

// run copies until src ends or the tunnel does, and reports to the tunnel.
func (c *copier) run() {
	var err error
	if c.canSplice() {
		err = c.spliceLoop()
	} else {
		err = c.bufferLoop()
	}
	c.finish(err)
}

// finish reports how src ended: EOF is passed on to dst, anything else ends
// the tunnel.
func (c *copier) finish(err error) {
	if err == io.EOF {
		c.t.sawEOF(c)
		err = c.closeWrite()
	}
	if err != nil {
		c.t.end(c.t.reasonFor(err), err)
	}
}

// bufferLoop is the portable copier: chunk by chunk through pooled buffers.
// It returns io.EOF when src ends.
func (c *copier) bufferLoop() error {
	for {
		if _, err := c.copyOnce(); err != nil {
			return err
		}
	}
}

// copyOnce moves one chunk: it waits for data, reads it into a pooled
// buffer, writes it to dst and gives the buffer back. full reports that the
// read filled the buffer, so src probably has more. io.CopyBuffer is no use
// here: with a *net.TCPConn on either end it bypasses the buffer
// (ReaderFrom/WriterTo), and the relay needs each chunk for counters and the
// idle clock.
func (c *copier) copyOnce() (full bool, err error) {
	bp, n, err := c.readChunk()
	if bp == nil {
		return false, err
	}
	defer c.t.spares.bufs.Put(bp)
	if n > 0 {
		if werr := c.write((*bp)[:n]); werr != nil {
			return false, werr
		}
	}
	return n == len(*bp), err
}

// readBlocking reads a chunk from an opaque src, which can only be waited on
// by reading: the buffer is held while src is idle.
func (c *copier) readBlocking() (*[]byte, int, error) {
	bp := c.t.spares.bufs.Get().(*[]byte)
	n, err := c.read(*bp)
	return bp, n, err
}

// read reads once from src, riding out idle deadlines while the tunnel is
// active. It returns io.EOF unwrapped.
func (c *copier) read(buf []byte) (int, error) {
	for {
		n, err := c.src.Read(buf)
		if err == nil || err == io.EOF {
			return n, err
		}
		if n == 0 && c.keepWaiting(err, c.src, true) {
			continue
		}
		return n, c.srcErr(err)
	}
}

// write writes all of b to dst. On Linux it first tries once without
// waiting; only a write that would block pays for deadlines (writeWait).
func (c *copier) write(b []byte) error {
	for len(b) > 0 {
		n, err := c.tryWrite(b)
		if n > 0 {
			c.t.touch()
			c.count(n)
			b = b[n:]
		}
		switch {
		case err == errWriteWouldBlock:
			return c.writeWait(b)
		case err != nil:
			return c.dstErr(err)
		}
	}
	return nil
}

// writeWait writes all of b to dst, waiting for room as long as the tunnel
// allows: it ends with a *writeTimeoutError once dst accepted no byte for
// WriteTimeout, and rides out idle deadlines while the tunnel is active
// (partial progress counts as activity).
func (c *copier) writeWait(b []byte) error {
	t := c.t
	stalled := time.Now() // since when dst accepted nothing
	if t.wt > 0 {
		if err := c.dst.SetWriteDeadline(c.writeDeadline(stalled)); err != nil {
			return c.dstErr(err)
		}
	}
	for len(b) > 0 {
		n, err := c.dst.Write(b)
		if n > 0 {
			t.touch()
			c.count(n)
			b = b[n:]
			if err != nil {
				stalled = time.Now()
			}
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return c.dstErr(err)
		}
		now := time.Now()
		if t.wt > 0 && !now.Before(stalled.Add(t.wt)) {
			return c.dstErr(&writeTimeoutError{wt: t.wt})
		}
		if t.idle > 0 && !now.Before(t.start.Add(time.Duration(t.last.Load())+t.idle)) {
			return c.dstErr(err) // idle: reasonFor tells
		}
		if err := c.dst.SetWriteDeadline(c.writeDeadline(stalled)); err != nil {
			return c.dstErr(err)
		}
	}
	return nil
}

// writeDeadline is when a write waiting since stalled must give up, for the
// write timeout or the idle timeout, whichever comes first; zero if neither.
func (c *copier) writeDeadline(stalled time.Time) time.Time {
	t := c.t
	var d time.Time
	if t.wt > 0 {
		d = stalled.Add(t.wt)
	}
	if t.idle > 0 {
		if id := t.start.Add(time.Duration(t.last.Load()) + t.idle); d.IsZero() || id.Before(d) {
			d = id
		}
	}
	return d
}

// errWriteWouldBlock: tryWrite found no room in dst (or cannot tell without
// waiting); writeWait then waits.
var errWriteWouldBlock = errors.New("destination has no room now")

// writeTimeoutError: a destination accepted no byte for the write timeout.
type writeTimeoutError struct{ wt time.Duration }

func (e *writeTimeoutError) Error() string {
	return fmt.Sprintf("no byte accepted for %v", e.wt)
}

func (e *writeTimeoutError) Unwrap() error { return os.ErrDeadlineExceeded }

// count adds n bytes moved to dst.
func (c *copier) count(n int) {
	c.n += int64(n)
	if c.t.onBytes != nil {
		c.t.onBytes(c.up, int64(n))
	}
}

// keepWaiting reports whether err is an idle deadline that fired while the
// tunnel was still active (bytes moved either way within IdleTimeout). If so
// it pushes conn's read or write deadline to IdleTimeout after that activity
// and the caller retries. Deadlines are set this lazily, not per chunk, so
// the hot path does not touch timers.
func (c *copier) keepWaiting(err error, conn net.Conn, read bool) bool {
	t := c.t
	if t.idle <= 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	deadline := t.start.Add(time.Duration(t.last.Load()) + t.idle)
	if !time.Now().Before(deadline) {
		return false
	}
	if read {
		err = conn.SetReadDeadline(deadline)
	} else {
		err = conn.SetWriteDeadline(deadline)
	}
	return err == nil
}

// closeWrite passes src's EOF on to dst. A dst that cannot half-close keeps
// its write half open until the tunnel ends: the other direction may still
// be flowing.
func (c *copier) closeWrite() error {
	cw, ok := c.dst.(interface{ CloseWrite() error })
	if !ok {
		return nil
	}
	// ENOTCONN: the peer is already gone (it closed or reset after
	// sending its own EOF), so there is no write half left to close; the
	// end of the tunnel is clean as far as this direction goes.
	if err := cw.CloseWrite(); err != nil && !errors.Is(err, syscall.ENOTCONN) {
		return &sideError{op: "close write", client: !c.up, err: err}
	}
	return nil
}

func (c *copier) srcErr(err error) error {
	return &sideError{op: "read", client: c.up, err: err}
}

func (c *copier) dstErr(err error) error {
	return &sideError{op: "write", client: !c.up, err: err}
}
