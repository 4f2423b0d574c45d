//go:build linux

package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An idle tunnel must not hold a goroutine: two goroutine stacks (8 KiB or
// more) cost more than everything else an idle tunnel holds. So on Linux a
// Relay parks each direction of a tunnel in one epoll set of its own
// (level-triggered, EPOLLONESHOT), and one goroutine waits on that set. A
// readable source starts a goroutine for its direction, which copies until
// the source has nothing more, re-arms the source and exits. EPOLL_CTL_MOD
// re-evaluates a level-triggered source, so bytes that arrived between the
// last read and the re-arm fire at once.

// parkLinger is how long a direction that moved bytes waits in Go's poller
// for more before it parks. Long enough to keep a chatty tunnel (an echo
// every few ms) off the epoll set, short enough that tunnels opened at
// thousands per second do not pile up goroutine stacks before they park.
const parkLinger = 50 * time.Millisecond

// parkEvents is how many events one epoll_wait returns at most.
const parkEvents = 128

// parker is a Relay's epoll set of parked directions. The epoll fd and its
// waiting goroutine exist only while some tunnel is parked: the goroutine
// closes both and exits when the last tunnel is gone, so that a Relay left
// alone holds no goroutine and no fd.
type parker struct {
	nextID atomic.Uint64

	mu   sync.Mutex // guards the following, and every epoll_ctl
	dirs map[uint64]*parkDir
	ep   int // epoll fd, -1 when there is no waiting goroutine
	wake int // eventfd in the set, to wake the goroutine; id 0
}

func newParker() *parker {
	return &parker{dirs: make(map[uint64]*parkDir), ep: -1, wake: -1}
}

// startLocked makes the epoll set and starts its goroutine, if needed.
func (p *parker) startLocked() error {
	if p.ep >= 0 {
		return nil
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(ep)
		return os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // data 0: the wake-up
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(ep)
		_ = unix.Close(wake)
		return os.NewSyscallError("epoll_ctl", err)
	}
	p.ep, p.wake = ep, wake
	go p.wait(ep, wake)
	return nil
}

// wait dispatches the set's events: each ready direction gets a goroutine.
// It exits, closing the set, once no tunnel is parked.
func (p *parker) wait(ep, wake int) {
	events := make([]unix.EpollEvent, parkEvents)
	ready := make([]*parkDir, 0, parkEvents)
	for {
		n, err := unix.EpollWait(ep, events, -1)
		if err != nil && err != unix.EINTR {
			// Cannot happen with a valid set; end every tunnel rather
			// than leave them hanging.
			p.failAll(os.NewSyscallError("epoll_wait", err))
			n = 0
		}
		ready = ready[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				var buf [8]byte
				_, _ = unix.Read(wake, buf[:])
				continue
			}
			if d := p.dirs[id]; d != nil {
				ready = append(ready, d)
			}
		}
		if len(p.dirs) == 0 {
			p.ep, p.wake = -1, -1
			p.mu.Unlock()
			_ = unix.Close(ep)
			_ = unix.Close(wake)
			return
		}
		p.mu.Unlock()
		for i, d := range ready {
			d.pt.wakeUp(d)
			ready[i] = nil // keep no ended tunnel reachable until the next event
		}
	}
}

// failAll ends every parked tunnel with err.
func (p *parker) failAll(err error) {
	p.mu.Lock()
	var pts []*parkTunnel
	for _, d := range p.dirs {
		pts = append(pts, d.pt)
	}
	p.mu.Unlock()
	for _, pt := range pts {
		pt.end(EndError, err)
	}
}

// ctl runs epoll_ctl for d's source socket, inside Control so that the fd
// cannot be closed and reused meanwhile. Called with p.mu held.
func (p *parker) ctlLocked(op int, d *parkDir) error {
	var cerr error
	err := d.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
			Fd:     int32(uint32(d.id)),
			Pad:    int32(uint32(d.id >> 32)),
		}
		if e := unix.EpollCtl(p.ep, op, int(fd), &ev); e != nil {
			cerr = os.NewSyscallError("epoll_ctl", e)
		}
	})
	if err != nil {
		return err
	}
	return cerr
}

// register lists both directions of pt. Neither is in the epoll set yet:
// the tunnel starts hot, with a goroutine per direction, and a direction
// joins the set at its first rearm. (Adding it now, even with no event
// asked for, would not do: the kernel always adds EPOLLHUP and EPOLLERR,
// and a hang-up would wake a second goroutine for a running direction.)
func (p *parker) register(pt *parkTunnel) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.startLocked(); err != nil {
		return err
	}
	for _, d := range pt.dirs {
		d.id = p.nextID.Add(1)
		p.dirs[d.id] = d
	}
	return nil
}

// rearm parks d again after its source ran dry.
func (p *parker) rearm(d *parkDir) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dirs[d.id] != d {
		return net.ErrClosed // the tunnel has ended
	}
	op := unix.EPOLL_CTL_MOD
	if !d.added {
		op, d.added = unix.EPOLL_CTL_ADD, true
	}
	return p.ctlLocked(op, d)
}

// remove forgets pt's directions. Their sockets leave the set when closed.
func (p *parker) remove(pt *parkTunnel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range pt.dirs {
		delete(p.dirs, d.id)
	}
	p.wakeLocked()
}

// wakeLocked makes the waiting goroutine look again, so that it exits once
// nothing is parked.
func (p *parker) wakeLocked() {
	if len(p.dirs) == 0 && p.wake >= 0 {
		one := [8]byte{1}
		_, _ = unix.Write(p.wake, one[:])
	}
}

// parkTunnel is a tunnel whose directions park in the Relay's epoll set.
type parkTunnel struct {
	t      *tunnel
	p      *parker
	dirs   [2]*parkDir
	done   func(Result)
	stop   func() bool // stops the ctx AfterFunc
	timer  *time.Timer // idle timeout; nil without one
	client net.Conn
	target net.Conn

	mu       sync.Mutex // guards the following and timer
	running  int        // direction goroutines running, plus Start's own hold
	eofs     int        // directions ended with EOF
	ended    bool       // end was called: error, reset, ctx or idle
	finished bool       // done has been called (or is about to be)
}

// parkDir is one parked direction: its copier and its source's socket.
type parkDir struct {
	pt    *parkTunnel
	c     *copier
	rc    syscall.RawConn
	id    uint64
	added bool // in the epoll set (guarded by the parker's mu)
}

// startParked starts a tunnel on the epoll path if both conns expose their
// sockets; it reports false, having touched nothing, otherwise.
func (r *Relay) startParked(ctx context.Context, client, target net.Conn, done func(Result)) bool {
	if r.noPark || rawSocket(client) == nil || rawSocket(target) == nil {
		return false
	}
	t := r.newTunnel(client, target)
	if !t.up.canSplice() || !t.down.canSplice() {
		return false
	}
	t.up.sys.noWait, t.down.sys.noWait = true, true
	pt := &parkTunnel{t: t, p: t.spares.park, done: done, client: client, target: target, running: 1}
	pt.dirs[0] = &parkDir{pt: pt, c: &t.up, rc: t.up.sys.src}
	pt.dirs[1] = &parkDir{pt: pt, c: &t.down, rc: t.down.sys.src}

	// Reads never wait in Go's poller here, so they need no deadline; a
	// write blocked on a peer that does not read ends at the idle timeout
	// (keepWaiting pushes the deadline while the tunnel is active).
	var wd time.Time
	if t.idle > 0 {
		wd = t.start.Add(t.idle)
	}
	for _, c := range []net.Conn{client, target} {
		_ = c.SetReadDeadline(time.Time{})
		_ = c.SetWriteDeadline(wd)
	}
	if err := pt.p.register(pt); err != nil {
		return false // the goroutine path copes
	}
	// Start holds one reference (running) until here, so that nothing
	// finishes the tunnel while it is being set up.
	pt.stop = context.AfterFunc(ctx, func() { pt.end(EndCanceled, context.Cause(ctx)) })
	if t.idle > 0 {
		pt.mu.Lock()
		pt.timer = time.AfterFunc(t.idle, pt.checkIdle)
		pt.mu.Unlock()
	}
	// A new tunnel is about to be busy (a WebSocket handshake follows the
	// 200 at once), so both directions start hot, lingering in Go's poller,
	// and park only once quiet: waking a new tunnel through the epoll set
	// cost a thread switch and an epoll_ctl on the CONNECT path.
	for _, d := range pt.dirs {
		pt.wakeUp(d)
	}
	pt.release(false)
	return true
}

// wakeUp starts a goroutine for d, whose source is readable (or failed).
func (pt *parkTunnel) wakeUp(d *parkDir) {
	pt.mu.Lock()
	if pt.ended || pt.finished {
		pt.mu.Unlock()
		return
	}
	pt.running++
	pt.mu.Unlock()
	go d.run()
}

// run copies what d's source has, then parks d again, or passes on its EOF,
// or ends the tunnel. A panic ends the tunnel, not the process.
func (d *parkDir) run() {
	eof := false
	defer func() { d.pt.release(eof) }()
	defer catchPanic(d.pt)
	c := d.c
	err := c.spliceLoop()
	for err == errWouldBlock {
		var full bool
		if full, err = d.linger(); err == nil {
			err = c.spliceFrom(full) // more came while the direction was hot
			continue
		}
		if err != errWouldBlock {
			break
		}
		if err := d.pt.p.rearm(d); err != nil {
			// The conn was closed under us: only the tunnel's own end
			// (which recorded its reason first) or a close from outside
			// does that.
			d.pt.end(EndError, fmt.Errorf("park %s: %w", c.side(), err))
		}
		return
	}
	if err == io.EOF {
		c.t.sawEOF(c)
		if err = c.closeWrite(); err == nil {
			eof = true
			return
		}
	}
	d.pt.end(c.t.reasonFor(err), err)
}

// linger waits up to parkLinger in Go's poller for src to have more: a
// direction that just moved bytes will likely move more soon (an echo, a
// burst of frames), and waking through the epoll set costs a goroutine, a
// thread switch and an epoll_ctl per message. If data comes it moves one
// chunk, as copyOnce does, and returns nil; full says the chunk filled the
// buffer (bulk follows). It returns errWouldBlock when the direction should
// park, io.EOF at the end of src, or an error.
func (d *parkDir) linger() (full bool, err error) {
	c := d.c
	if err := c.src.SetReadDeadline(time.Now().Add(parkLinger)); err != nil {
		return false, errWouldBlock // closed: rearm finds out
	}
	c.sys.noWait = false
	err = c.sys.src.Read(c.sys.recvFn)
	c.sys.noWait = true
	_ = c.src.SetReadDeadline(time.Time{})
	switch {
	case err != nil:
		return false, errWouldBlock // the linger ran out, or the conn is closed
	case c.sys.err != nil:
		return false, c.srcErr(os.NewSyscallError("read", c.sys.err))
	case c.sys.n == 0:
		return false, io.EOF
	}
	bp := c.sys.buf
	c.sys.buf = nil
	defer c.t.spares.bufs.Put(bp)
	return c.sys.n == len(*bp), c.write((*bp)[:c.sys.n])
}

// side names the source of c for errors.
func (c *copier) side() string {
	if c.up {
		return "client"
	}
	return "target"
}

// end ends the tunnel: records the reason, closes both conns and finishes
// the tunnel once no direction is running.
func (pt *parkTunnel) end(reason EndReason, err error) {
	pt.t.end(reason, err)
	pt.markEnded()
}

func (pt *parkTunnel) markEnded() {
	pt.mu.Lock()
	pt.ended = true
	fin := pt.finishLocked()
	pt.mu.Unlock()
	if fin {
		pt.finish()
	}
}

// release drops one running reference; eof says the direction ended with
// EOF passed on.
func (pt *parkTunnel) release(eof bool) {
	pt.mu.Lock()
	pt.running--
	if eof {
		pt.eofs++
	}
	fin := pt.finishLocked()
	pt.mu.Unlock()
	if fin {
		pt.finish()
	}
}

// finishLocked reports whether the caller is the one to finish the tunnel.
func (pt *parkTunnel) finishLocked() bool {
	if pt.finished || pt.running > 0 || !pt.ended && pt.eofs < 2 {
		return false
	}
	pt.finished = true
	return true
}

// finish closes both conns, forgets the tunnel and calls done, once.
func (pt *parkTunnel) finish() {
	pt.p.remove(pt)
	_ = pt.client.Close()
	_ = pt.target.Close()
	pt.mu.Lock()
	if pt.timer != nil {
		pt.timer.Stop()
	}
	pt.mu.Unlock()
	if pt.stop != nil {
		pt.stop()
	}
	pt.done(pt.t.result())
}

// checkIdle runs when the idle timeout may have passed: it ends the tunnel
// if no byte moved for IdleTimeout, else it waits for the rest.
func (pt *parkTunnel) checkIdle() {
	t := pt.t
	deadline := t.start.Add(time.Duration(t.last.Load()) + t.idle)
	if wait := time.Until(deadline); wait > 0 {
		pt.mu.Lock()
		if !pt.finished {
			pt.timer.Reset(wait)
		}
		pt.mu.Unlock()
		return
	}
	pt.end(EndIdleTimeout, fmt.Errorf("no byte moved for %v: %w", t.idle, os.ErrDeadlineExceeded))
}

// running reports whether the parker's goroutine and epoll set exist, for
// tests.
func (p *parker) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ep >= 0
}
