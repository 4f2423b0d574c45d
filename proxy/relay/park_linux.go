//go:build linux

package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An idle tunnel must not hold a goroutine: two goroutine stacks (8 KiB or
// more) cost more than everything else an idle tunnel holds. So on Linux a
// Relay parks each direction of a tunnel in an epoll set of its own, and
// moves small frames right where readiness is learned: one loop goroutine
// per CPU (tunnels sharded across them by id) waits on its level-triggered
// set and, for each readable source, reads once into the loop's buffer and
// writes once to the destination. A short read leaves the source armed: the
// next readiness event says when to read again, so a small frame costs one
// read and one write per direction, with no goroutine wake-up, no EAGAIN
// read and no epoll_ctl. Only a direction whose write would block, or whose
// read filled the buffer (bulk), is handed to a goroutine (splice path, see
// spliceFrom), its source taken out of the set meanwhile: one epoll_ctl at
// the hand-off, one on return. Go's own poller has the sockets registered
// too (edge-triggered); the relay never waits in it for a parked direction.

// parkLinger is how long a bulk burst on a goroutine waits in Go's poller,
// holding its empty pipe, for more before the direction returns to its
// loop: bulk often pauses for less than a round trip, and the way back
// costs two epoll_ctl and a goroutine.
const parkLinger = 50 * time.Millisecond

// parkEvents is how many events one epoll_wait returns at most.
const parkEvents = 128

// parker is a Relay's set of loops. A loop's epoll fd and goroutine exist
// only while some tunnel is parked in it: the goroutine closes the set and
// exits when its last tunnel is gone, so that a Relay left alone holds no
// goroutine and no fd.
type parker struct {
	nextID   atomic.Uint64 // tunnel ids; direction ids are 2id and 2id+1
	handoffs atomic.Int64  // directions handed from a loop to a goroutine, for tests
	once     sync.Once
	loops    []*loop
}

// loop is one epoll set with the goroutine that waits on it.
type loop struct {
	mu   sync.Mutex // guards the following, and epoll_ctl from outside the loop
	dirs map[uint64]*parkDir
	ep   int // epoll fd, -1 when there is no waiting goroutine
	wake int // eventfd in the set, to wake the goroutine; id 0
}

func newParker() *parker { return &parker{} }

// loopFor returns the loop of tunnel id: one loop per CPU, tunnels spread
// over them, no lock shared between loops.
func (p *parker) loopFor(id uint64) *loop {
	p.once.Do(p.makeLoops)
	return p.loops[id%uint64(len(p.loops))]
}

func (p *parker) makeLoops() {
	p.loops = make([]*loop, max(runtime.GOMAXPROCS(0), 1))
	for i := range p.loops {
		p.loops[i] = &loop{dirs: make(map[uint64]*parkDir), ep: -1, wake: -1}
	}
}

// startLocked makes the epoll set and starts its goroutine, if needed.
func (l *loop) startLocked() error {
	if l.ep >= 0 {
		return nil
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil { // so that Go's poller takes it
		_ = unix.Close(ep)
		return os.NewSyscallError("fcntl", err)
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
	l.ep, l.wake = ep, wake
	go l.wait(ep, wake)
	return nil
}

// wait handles the set's events: each readable direction moves one chunk
// inline (see inline). It exits, closing the set, once no tunnel is parked.
func (l *loop) wait(ep, wake int) {
	events := make([]unix.EpollEvent, parkEvents)
	ready := make([]*parkDir, 0, parkEvents)
	buf := make([]byte, bufSize) // the loop's own: only this goroutine uses it
	// The set itself waits in Go's poller (an epoll fd is pollable): the
	// loop is woken like any goroutine waiting on a socket, and takes its
	// turn with them, rather than block a thread in epoll_wait and come
	// back through the scheduler's global queue, behind bulk.
	//
	// The events are handled inside the RawConn.Read callback, which asks
	// to wait (returns false) only once a poll found nothing ready. The set
	// is level-triggered inside but Go's poller sees it edge-triggered: a
	// source that is still readable after its event (data and EOF came
	// together, and one read took the data) sends no new notification, so
	// only an empty poll makes it safe to wait.
	f := os.NewFile(uintptr(ep), "relay-epoll")
	exit := false
	handle := func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				// Cannot happen with a valid set; end every tunnel
				// rather than leave them hanging.
				l.failAll(os.NewSyscallError("epoll_wait", err))
				n = 0
			}
			ready = ready[:0]
			l.mu.Lock()
			for _, ev := range events[:max(n, 0)] {
				id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				if id == 0 {
					var b [8]byte
					_, _ = unix.Read(wake, b[:])
					continue
				}
				if d := l.dirs[id]; d != nil {
					ready = append(ready, d)
				}
			}
			if len(l.dirs) == 0 {
				l.ep, l.wake = -1, -1
				l.mu.Unlock()
				exit = true
				return true
			}
			l.mu.Unlock()
			if n == 0 {
				return false // nothing ready: wait for the next notification
			}
			for i, d := range ready {
				d.inline(ep, buf)
				ready[i] = nil // keep no ended tunnel reachable until the next event
			}
		}
	}
	rc, err := f.SyscallConn()
	for !exit {
		if err == nil {
			err = rc.Read(handle)
		}
		if err != nil {
			// Cannot happen (nothing closes or times out the set's file
			// but this loop); end every tunnel, and exit once they are gone.
			l.failAll(err)
			if exit = l.empty(); !exit {
				time.Sleep(time.Millisecond)
			}
		}
	}
	_ = f.Close()
	_ = unix.Close(wake)
}

// empty reports whether no tunnel is parked in l, and marks l stopped if so.
func (l *loop) empty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.dirs) == 0 {
		l.ep, l.wake = -1, -1
		return true
	}
	return false
}

// failAll ends every parked tunnel with err.
func (l *loop) failAll(err error) {
	l.mu.Lock()
	var pts []*parkTunnel
	for _, d := range l.dirs {
		pts = append(pts, d.pt)
	}
	l.mu.Unlock()
	for _, pt := range pts {
		pt.endAsync(EndError, err)
	}
}

// ctl runs epoll_ctl on ep for d's source socket, inside Control so that
// the fd cannot be closed and reused meanwhile. Sources are level-triggered.
func ctl(ep, op int, d *parkDir) error {
	var cerr error
	err := d.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLRDHUP,
			Fd:     int32(uint32(d.id)),
			Pad:    int32(uint32(d.id >> 32)),
		}
		if e := unix.EpollCtl(ep, op, int(fd), &ev); e != nil {
			cerr = os.NewSyscallError("epoll_ctl", e)
		}
	})
	if err != nil {
		return err
	}
	return cerr
}

// register lists both directions of pt and adds their sources to the set:
// the tunnel starts parked, and its first bytes (a WebSocket handshake
// follows the 200 at once) move inline.
func (l *loop) register(pt *parkTunnel, id uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.startLocked(); err != nil {
		return err
	}
	for i, d := range pt.dirs {
		d.id = 2*id + uint64(i)
		l.dirs[d.id] = d
	}
	for i, d := range pt.dirs {
		if err := ctl(l.ep, unix.EPOLL_CTL_ADD, d); err != nil {
			if i == 1 {
				_ = ctl(l.ep, unix.EPOLL_CTL_DEL, pt.dirs[0])
			}
			for _, d := range pt.dirs {
				delete(l.dirs, d.id)
			}
			l.wakeLocked()
			return err
		}
	}
	return nil
}

// rearm parks d again, from its goroutine, after its source ran dry.
func (l *loop) rearm(d *parkDir) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dirs[d.id] != d || l.ep < 0 {
		return net.ErrClosed // the tunnel has ended
	}
	d.state.Store(dirParked)
	if err := ctl(l.ep, unix.EPOLL_CTL_ADD, d); err != nil {
		d.state.Store(dirRunning)
		return err
	}
	return nil
}

// remove forgets pt's directions. Their sockets leave the set when closed.
func (l *loop) remove(pt *parkTunnel) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range pt.dirs {
		delete(l.dirs, d.id)
	}
	l.wakeLocked()
}

// wakeLocked makes the waiting goroutine look again, so that it exits once
// nothing is parked.
func (l *loop) wakeLocked() {
	if len(l.dirs) == 0 && l.wake >= 0 {
		one := [8]byte{1}
		_, _ = unix.Write(l.wake, one[:])
	}
}

// States of a parked tunnel's direction.
const (
	dirParked  int32 = iota // in the loop's set: the loop moves it
	dirRunning              // handed to a goroutine, out of the set
	dirDone                 // its EOF was passed on, out of the set
)

// parkTunnel is a tunnel whose directions park in one of the Relay's loops.
type parkTunnel struct {
	t      *tunnel
	l      *loop
	dirs   [2]*parkDir
	done   func(Result)
	stop   func() bool // stops the ctx AfterFunc
	timer  *time.Timer // idle timeout; nil without one
	client net.Conn
	target net.Conn

	mu       sync.Mutex // guards the following and timer
	running  int        // directions being moved (inline or by a goroutine), plus Start's own hold
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
	state atomic.Int32 // dirParked, dirRunning or dirDone
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
	park := t.spares.park
	id := park.nextID.Add(1)
	pt := &parkTunnel{t: t, l: park.loopFor(id), done: done, client: client, target: target, running: 1}
	pt.dirs[0] = &parkDir{pt: pt, c: &t.up, rc: t.up.sys.src}
	pt.dirs[1] = &parkDir{pt: pt, c: &t.down, rc: t.down.sys.src}

	// Reads never wait in Go's poller here (but for a lingering goroutine,
	// which sets its own deadline), so they need none; a write blocked on
	// a peer that does not read ends at the idle or write timeout
	// (writeWait pushes the deadline while the tunnel is active).
	var wd time.Time
	if t.idle > 0 {
		wd = t.start.Add(t.idle)
	}
	for _, c := range []net.Conn{client, target} {
		_ = c.SetReadDeadline(time.Time{})
		_ = c.SetWriteDeadline(wd)
	}
	// Start holds one reference (running) until the end of setup, so that
	// nothing finishes the tunnel meanwhile; the loop may already move its
	// first bytes.
	if err := pt.l.register(pt, id); err != nil {
		return false // the goroutine path copes
	}
	pt.stop = context.AfterFunc(ctx, func() { pt.end(EndCanceled, context.Cause(ctx)) })
	if t.idle > 0 {
		pt.mu.Lock()
		pt.timer = time.AfterFunc(t.idle, pt.checkIdle)
		pt.mu.Unlock()
	}
	pt.release(false, false)
	return true
}

// inline moves one chunk of d's readable source, on the loop goroutine:
// one read into the loop's buffer, one write. A small frame leaves d armed.
// A read that filled the buffer (bulk), or a write that would block, hands
// d to a goroutine with its source out of the set (ep); EOF is passed on
// and takes d out of the set; an error ends the tunnel. Nothing here waits,
// and a panic ends the tunnel, not the loop.
func (d *parkDir) inline(ep int, buf []byte) {
	pt := d.pt
	if d.state.Load() != dirParked {
		return // an event from before the hand-off
	}
	pt.mu.Lock()
	if pt.ended || pt.finished {
		pt.mu.Unlock()
		return
	}
	pt.running++
	pt.mu.Unlock()
	eof, handed := false, false
	defer func() {
		if !handed {
			pt.release(eof, true)
		}
	}()
	defer catchPanic(endFunc(pt.endAsync))

	c := d.c
	n, err := c.readInline(buf)
	switch {
	case err == errWouldBlock:
		return // spurious: still armed
	case err == io.EOF:
		c.t.sawEOF(c)
		if err = c.closeWrite(); err == nil {
			d.state.Store(dirDone)
			// Level-triggered, EOF would fire until the socket leaves the
			// set. Even for the tunnel's last open direction the close
			// may be a moment away (another reference still running), and
			// the loop would spin on the event meanwhile: remove it now.
			_ = ctl(ep, unix.EPOLL_CTL_DEL, d)
			eof = true
			return
		}
		pt.endAsync(c.t.reasonFor(err), err)
		return
	case err != nil:
		pt.endAsync(c.t.reasonFor(err), err)
		return
	}
	w, err := c.tryWrite(buf[:n])
	if w > 0 {
		c.t.touch()
		c.count(w)
	}
	var rest *[]byte
	switch {
	case err == nil && w == n:
		if n < len(buf) {
			return // a small frame: d stays armed
		}
	case err == nil || err == errWriteWouldBlock:
		// dst is full: the rest waits in a pooled buffer, for a goroutine.
		rest = c.t.spares.bufs.Get().(*[]byte)
		*rest = (*rest)[:copy(*rest, buf[w:n])]
	default:
		err = c.dstErr(err)
		pt.endAsync(c.t.reasonFor(err), err)
		return
	}
	d.state.Store(dirRunning)
	_ = ctl(ep, unix.EPOLL_CTL_DEL, d) // a closed conn has left the set anyway
	handed = true                      // the goroutine releases
	c.t.spares.park.handoffs.Add(1)
	go d.run(rest)
}

// run moves d on a goroutine: first the bytes left by a blocked write
// (rest), or else the bulk the loop saw; then what the source has, with
// splice for bulk (lingering for more, see spliceBurst); then it parks d again,
// or passes on its EOF, or ends the tunnel. A panic ends the tunnel, not the
// process.
func (d *parkDir) run(rest *[]byte) {
	eof := false
	defer func() { d.pt.release(eof, false) }()
	defer catchPanic(d.pt)
	c := d.c
	var err error
	if rest != nil {
		err = c.writeWait(*rest)
		*rest = (*rest)[:cap(*rest)]
		c.t.spares.bufs.Put(rest)
		if err == nil {
			err = c.spliceLoop()
		}
	} else {
		err = c.spliceFrom(true)
	}
	if err == errWouldBlock {
		if err := d.pt.l.rearm(d); err != nil {
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
			d.state.Store(dirDone)
			eof = true
			return
		}
	}
	d.pt.end(c.t.reasonFor(err), err)
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
	pt.markEnded(false)
}

// endAsync is end for the loop goroutine: done, if it is called now, runs on
// a goroutine of its own, so that the loop never waits on the caller's code.
func (pt *parkTunnel) endAsync(reason EndReason, err error) {
	pt.t.end(reason, err)
	pt.markEnded(true)
}

func (pt *parkTunnel) markEnded(async bool) {
	pt.mu.Lock()
	pt.ended = true
	fin := pt.finishLocked()
	pt.mu.Unlock()
	pt.finishIf(fin, async)
}

// release drops one running reference; eof says the direction ended with
// EOF passed on; async, that the caller is a loop.
func (pt *parkTunnel) release(eof, async bool) {
	pt.mu.Lock()
	pt.running--
	if eof {
		pt.eofs++
	}
	fin := pt.finishLocked()
	pt.mu.Unlock()
	pt.finishIf(fin, async)
}

func (pt *parkTunnel) finishIf(fin, async bool) {
	if fin {
		pt.finish(async)
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

// finish closes both conns, forgets the tunnel and calls done, once;
// async (the caller is a loop): done runs on a goroutine of its own. The
// conns are closed at once either way: a level-triggered EOF or hang-up
// would otherwise keep waking the loop until they are.
func (pt *parkTunnel) finish(async bool) {
	pt.l.remove(pt)
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
	if async {
		go pt.done(pt.t.result())
		return
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

// running reports whether some loop's goroutine and epoll set exist, for
// tests.
func (p *parker) running() bool { return p.fds() > 0 }

// fds counts the descriptors the loops hold (an epoll fd and an eventfd
// each while running), for tests.
func (p *parker) fds() int {
	p.once.Do(p.makeLoops)
	n := 0
	for _, l := range p.loops {
		l.mu.Lock()
		if l.ep >= 0 {
			n += 2
		}
		l.mu.Unlock()
	}
	return n
}
