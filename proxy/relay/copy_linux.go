//go:build linux

package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// defaultPipeSize is the pipe capacity asked for: one splice moves up to
	// this much. Syscalls are what a busy core pays for on a VM: 1 MiB (as
	// Go's own io.Copy splice uses) takes 3-6 splices per MB against 8-9
	// with 256 KiB (perf stat, see README). The kernel may grant less
	// (fs.pipe-max-size, fs.pipe-user-pages-soft): the pipe then keeps its
	// size.
	defaultPipeSize = 1 << 20
	// maxSparePipes bounds the pipes a Relay keeps between bursts; more
	// are closed when given back. 16 MiB of spares leave most of an
	// unprivileged user's pipe budget (64 MiB) to pipes in use.
	maxSparePipes = 16
	// slowFill is what one fill moves once dst had to be waited for: a
	// slow reader gets small fills, so that a reader that stalls has at
	// most this much spilled into buffers (and one pipe's worth once).
	slowFill = 64 << 10
	// spliceFlags: MOVE is a hint to move pages rather than copy them;
	// NONBLOCK makes the pipe side non-blocking (Go's sockets already are).
	spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
	// spillAfter is how long a burst waits for room in dst holding its
	// pipe; then the pipe's bytes move to buffers and the pipe goes back.
	spillAfter = 20 * time.Millisecond
	// yieldBytes is how much a burst moves before it lets other
	// goroutines (the loops with small frames, other bulk) run: at about
	// 2 GB/s per core, a quarter of a millisecond.
	yieldBytes = 256 << 10
)

// errSpliceUnsupported: the kernel refused to splice from this socket type
// (EINVAL, consuming nothing), so the direction falls back to buffers.
var errSpliceUnsupported = errors.New("splice not supported")

// errWouldBlock: a parked tunnel's direction found its source empty; the
// direction parks again instead of waiting in Go's poller.
var errWouldBlock = errors.New("source has no data now")

// sysState is a copier's Linux state. The callbacks are bound once per
// tunnel so that handing them to RawConn.Read/Write allocates nothing per
// chunk; they report through n and err.
type sysState struct {
	src     syscall.RawConn // set if src's socket can be used directly
	dst     syscall.RawConn // set too if both sockets can splice
	pipe    *splicePipe     // held only while a bulk burst moves
	buf     *[]byte         // from recv: the chunk it read
	peekBuf [1]byte
	n       int
	err     error
	// noWait: reads never wait in Go's poller, they report EAGAIN
	// (errWouldBlock) so that the direction parks in the Relay's epoll set.
	noWait bool

	// tryWrite's buffer and outcome
	wbuf []byte
	wn   int
	werr error
	// spilled holds what a pipe held when dst had no room: the direction
	// waits for dst with these buffers, having given the pipe back.
	spilled []*[]byte

	// lbuf is a loop's buffer during readInline
	lbuf []byte
	// lingerFill: fill waits in Go's poller (bounded by a read deadline)
	// instead of reporting EAGAIN; graceDrain: drain waits likewise (bounded
	// by a write deadline) before the pipe is spilled.
	lingerFill, graceDrain bool
	// slow: dst made the last drain wait; fills are slowFill then.
	slow bool

	recvFn, peekFn, fillFn, drainFn, writeFn, inlineFn func(fd uintptr) bool
	// writeCtlFn is writeNow for RawConn.Control, which, unlike
	// RawConn.Write, ignores write deadlines: tryWrite never waits, so a
	// deadline left from a burst or the idle clock must not turn a frame
	// that fits into a hand-off.
	writeCtlFn func(fd uintptr)
}

// rawSocket returns c's RawConn when the relay may use c's socket directly:
// c is a *net.TCPConn, or any conn with SyscallConn and CloseWrite (which
// must not buffer reads in user space: the relay reads the socket itself).
func rawSocket(c net.Conn) syscall.RawConn {
	sc, ok := c.(interface {
		syscall.Conn
		CloseWrite() error
	})
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

func (c *copier) init() {
	if c.sys.src = rawSocket(c.src); c.sys.src == nil {
		return
	}
	c.sys.recvFn, c.sys.peekFn, c.sys.inlineFn = c.recv, c.peek, c.readNow
	if c.sys.dst = rawSocket(c.dst); c.sys.dst != nil {
		c.sys.fillFn, c.sys.drainFn, c.sys.writeFn = c.fill, c.drain, c.writeNow
		c.sys.writeCtlFn = func(fd uintptr) { c.writeNow(fd) }
	}
}

func (c *copier) canSplice() bool { return c.sys.dst != nil }

// readChunk waits until src has data and returns it in a pooled buffer.
// The buffer is borrowed only once data is there (see recv): a direction
// waiting on an idle socket holds nothing, and a small frame costs a read
// that finds nothing, a wake-up, a read and a write, as in Go's own
// read loop.
func (c *copier) readChunk() (*[]byte, int, error) {
	if c.sys.src == nil {
		return c.readBlocking()
	}
	for {
		err := c.sys.src.Read(c.sys.recvFn)
		if err == nil {
			break
		}
		if !c.keepWaiting(err, c.src, true) {
			return nil, 0, c.srcErr(err)
		}
	}
	switch {
	case c.sys.err == unix.EAGAIN:
		return nil, 0, errWouldBlock
	case c.sys.err != nil:
		return nil, 0, c.srcErr(os.NewSyscallError("read", c.sys.err))
	case c.sys.n == 0:
		return nil, 0, io.EOF
	}
	bp := c.sys.buf
	c.sys.buf = nil
	return bp, c.sys.n, nil
}

// readInline reads once from src into buf, never waiting: errWouldBlock if
// src has nothing, io.EOF at its end.
func (c *copier) readInline(buf []byte) (int, error) {
	c.sys.lbuf = buf
	err := c.sys.src.Read(c.sys.inlineFn)
	c.sys.lbuf = nil
	switch {
	case err != nil:
		return 0, c.srcErr(err)
	case c.sys.err == unix.EAGAIN:
		return 0, errWouldBlock
	case c.sys.err != nil:
		return 0, c.srcErr(os.NewSyscallError("read", c.sys.err))
	case c.sys.n == 0:
		return 0, io.EOF
	}
	return c.sys.n, nil
}

// readNow is readInline's callback: one read(2).
func (c *copier) readNow(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), c.sys.lbuf)
		if err == unix.EINTR {
			continue
		}
		c.sys.n, c.sys.err = max(n, 0), err
		return true
	}
}

// recv reads what the socket has into a buffer borrowed for the purpose,
// and gives the buffer back if there is nothing yet (EAGAIN), asking the
// poller to wait. It must try the read itself: Go's poller is
// edge-triggered and RawConn.Read resets its state first, so a callback that
// just returned false would sleep through data already there.
func (c *copier) recv(fd uintptr) bool {
	bufs := &c.t.spares.bufs
	bp := bufs.Get().(*[]byte)
	for {
		n, err := unix.Read(int(fd), *bp)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			bufs.Put(bp)
			if c.sys.noWait {
				c.sys.n, c.sys.err = 0, err
				return true
			}
			return false
		}
		if n > 0 {
			c.sys.buf = bp
		} else {
			bufs.Put(bp)
		}
		c.sys.n, c.sys.err = n, err
		return true
	}
}

// waitReadable blocks until src has data, EOF or an error, holding nothing.
// A bulk burst starts with it, so that the burst is spliced from its first
// byte.
func (c *copier) waitReadable() error {
	for {
		c.sys.err = nil
		err := c.sys.src.Read(c.sys.peekFn)
		if err == nil {
			if c.sys.err == unix.EAGAIN {
				return errWouldBlock
			}
			if c.sys.err != nil {
				return c.srcErr(os.NewSyscallError("recvfrom", c.sys.err))
			}
			return nil
		}
		if !c.keepWaiting(err, c.src, true) {
			return c.srcErr(err)
		}
	}
}

// peek checks for data itself, for the reason given at recv. It takes a
// pending socket error (the kernel clears an error once it reports it), so
// it keeps it for waitReadable: otherwise a reset would read as a clean EOF.
//
// The raw syscall passes no address buffer: unix.Recvfrom's would escape to
// the heap on every wait. MSG_DONTWAIT means it never blocks.
func (c *copier) peek(fd uintptr) bool {
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.sys.peekBuf[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if c.sys.noWait {
				c.sys.err = errno
				return true
			}
			return false
		case 0:
			c.sys.err = nil // data or EOF
		default:
			c.sys.err = errno
		}
		return true
	}
}

// spliceLoop is the Linux socket-to-socket copier. Small frames go through
// a buffer (copyOnce), which costs less CPU than a pipe and three splices
// (BenchmarkRelayEcho); a read that fills the buffer means bulk, and the
// rest of the burst is spliced through a pipe borrowed from the Relay. While
// bursts stay bulk, the next one is spliced from its first byte. Either way
// the wait holds nothing. It returns io.EOF when src ends.
func (c *copier) spliceLoop() error { return c.spliceFrom(false) }

// spliceFrom is spliceLoop, starting with a bulk burst if bulk is set.
func (c *copier) spliceFrom(bulk bool) error {
	pipes := c.t.spares.pipes
	for {
		if bulk {
			// A parked direction's burst starts with the splice itself,
			// which waits (lingers) for the first byte: no peek.
			if !c.sys.noWait {
				if err := c.waitReadable(); err != nil {
					return err
				}
			}
		} else {
			full, err := c.copyOnce()
			if err != nil {
				return err
			}
			if !full {
				continue
			}
		}
		p, err := pipes.get()
		if err != nil {
			bulk = false // no pipe (out of fds?): go on with buffers
			continue
		}
		c.sys.pipe = p
		before := c.n
		err = c.spliceBurst()
		if err == errWouldBlock { // lingered for nothing: park
			c.sys.pipe = nil
			pipes.put(p)
			return err
		}
		if err == errDstFull {
			// dst has no room: wait for it holding buffers, not the pipe
			// (a pipe is two fds, and a stalled reader may stall for hours).
			err = c.spill(p)
			c.sys.pipe = nil
			pipes.put(p)
			if err == nil {
				err = c.writeSpilled()
			}
			if err != nil {
				return err
			}
			bulk = true
			continue
		}
		c.sys.pipe = nil
		pipes.put(p)
		bulk = c.n-before >= bufSize
		if err == errSpliceUnsupported {
			return c.bufferLoop()
		}
		if err != nil {
			return err
		}
	}
}

// errDstFull: spliceBurst found no room in dst with bytes in the pipe.
var errDstFull = errors.New("destination has no room")

// spill moves the bytes held in p into pooled buffers, emptying p.
func (c *copier) spill(p *splicePipe) error {
	bufs := &c.t.spares.bufs
	for p.n > 0 {
		bp := bufs.Get().(*[]byte)
		n, err := unix.Read(p.r, (*bp)[:min(len(*bp), p.n)])
		if err == unix.EINTR {
			bufs.Put(bp)
			continue
		}
		if err != nil || n <= 0 {
			bufs.Put(bp)
			if err == nil {
				err = io.ErrNoProgress // cannot happen: the pipe holds data
			}
			return c.srcErr(os.NewSyscallError("read pipe", err))
		}
		*bp = (*bp)[:n]
		c.sys.spilled = append(c.sys.spilled, bp)
		p.n -= n
	}
	return nil
}

// writeSpilled writes the spilled buffers to dst, waiting for room, and
// gives them back.
func (c *copier) writeSpilled() error {
	var err error
	for i, bp := range c.sys.spilled {
		if err == nil {
			err = c.writeWait(*bp)
		}
		*bp = (*bp)[:cap(*bp)]
		c.t.spares.bufs.Put(bp)
		c.sys.spilled[i] = nil
	}
	c.sys.spilled = c.sys.spilled[:0]
	return err
}

// tryWrite writes b to dst once without waiting: a short count, or
// errWriteWouldBlock when dst has no room. It does not look at deadlines
// (see writeCtlFn); writeWait applies them when it has to wait.
func (c *copier) tryWrite(b []byte) (int, error) {
	if c.sys.dst == nil {
		return 0, errWriteWouldBlock
	}
	c.sys.wbuf, c.sys.wn, c.sys.werr = b, 0, nil
	err := c.sys.dst.Control(c.sys.writeCtlFn)
	c.sys.wbuf = nil
	switch {
	case err != nil:
		return 0, err
	case c.sys.werr == unix.EAGAIN:
		return c.sys.wn, errWriteWouldBlock
	case c.sys.werr != nil:
		return c.sys.wn, os.NewSyscallError("write", c.sys.werr)
	}
	return c.sys.wn, nil
}

// writeNow is tryWrite's callback: one write(2), never a wait.
func (c *copier) writeNow(fd uintptr) bool {
	for {
		n, err := unix.Write(int(fd), c.sys.wbuf)
		if err == unix.EINTR {
			continue
		}
		c.sys.wn, c.sys.werr = max(n, 0), err
		return true
	}
}

// spliceBurst moves what src has now through the pipe into dst. It returns
// nil when src has nothing more for the moment (the pipe is then empty),
// io.EOF at the end of src, errDstFull when dst has no room for what the
// pipe holds. It never waits.
func (c *copier) spliceBurst() error {
	p := c.sys.pipe
	parked := c.sys.noWait
	if parked {
		defer func() { _ = c.src.SetReadDeadline(time.Time{}) }()
	}
	moved := 0 // since the last yield
	for {
		c.sys.n, c.sys.err = 0, nil
		if parked {
			// Linger: bulk often pauses for less than a round trip, and
			// the way back through the loop costs a goroutine and two
			// epoll_ctl. The pipe is empty meanwhile.
			if err := c.src.SetReadDeadline(time.Now().Add(parkLinger)); err != nil {
				return c.srcErr(err)
			}
			c.sys.lingerFill = true
		}
		err := c.sys.src.Read(c.sys.fillFn)
		c.sys.lingerFill = false
		if err != nil {
			if parked && errors.Is(err, os.ErrDeadlineExceeded) {
				return errWouldBlock
			}
			if c.keepWaiting(err, c.src, true) {
				continue
			}
			return c.srcErr(err)
		}
		switch {
		case c.sys.err == unix.EAGAIN:
			return nil
		case c.sys.err == unix.EINVAL: // consumed nothing: safe to fall back
			return errSpliceUnsupported
		case c.sys.err != nil:
			return c.srcErr(os.NewSyscallError("splice", c.sys.err))
		case c.sys.n == 0:
			return io.EOF
		}
		p.n = c.sys.n
		c.sys.slow = false // until drain has to wait
		for p.n > 0 {
			c.sys.n, c.sys.err = 0, nil
			// A short wait for room keeps the pipe (fast readers are often
			// a few µs behind); a longer one spills it (errDstFull).
			if err := c.dst.SetWriteDeadline(time.Now().Add(spillAfter)); err != nil {
				return c.dstErr(err)
			}
			c.sys.graceDrain = true
			err := c.sys.dst.Write(c.sys.drainFn)
			c.sys.graceDrain = false
			if c.sys.n > 0 {
				c.count(c.sys.n)
				moved += c.sys.n
			}
			switch {
			case err == nil && c.sys.err == unix.EAGAIN:
				return errDstFull
			case err == nil && c.sys.err != nil:
				return c.dstErr(os.NewSyscallError("splice", c.sys.err))
			case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
				return errDstFull // writeWait sorts the deadlines out
			case err != nil:
				return c.dstErr(err)
			}
		}
		if moved >= yieldBytes {
			// Bound what one direction moves before others (small frames
			// on the loops, other bulk) get the CPU.
			moved = 0
			runtime.Gosched()
		}
	}
}

// fill splices from the socket fd into the empty pipe. It never waits: as
// the pipe is empty, EAGAIN means the socket has nothing, and the caller
// then gives the pipe back rather than hold it while idle.
func (c *copier) fill(fd uintptr) bool {
	for {
		size := c.sys.pipe.size
		if c.sys.slow {
			size = min(size, slowFill)
		}
		n, err := unix.Splice(int(fd), nil, c.sys.pipe.w, nil, size, spliceFlags)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN && c.sys.lingerFill {
			return false
		}
		c.sys.n, c.sys.err = int(n), err
		return true
	}
}

// drain splices the pipe's data into the socket fd. It never waits: when
// the socket is full it reports EAGAIN, and the caller spills the pipe.
func (c *copier) drain(fd uintptr) bool {
	p := c.sys.pipe
	for p.n > 0 {
		n, err := unix.Splice(p.r, nil, int(fd), nil, p.n, spliceFlags)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && c.sys.graceDrain:
			c.sys.slow = true
			return false
		case err != nil:
			c.sys.err = err
			return true
		case n == 0:
			c.sys.err = io.ErrNoProgress // cannot happen: the pipe holds data
			return true
		}
		p.n -= int(n)
		c.sys.n += int(n)
		c.t.touch() // progress on a slow reader is activity
	}
	return true
}

// splicePipe is a pipe used as splice's in-kernel buffer.
type splicePipe struct {
	r, w int
	size int // capacity, as granted by the kernel
	n    int // bytes held
}

func newSplicePipe(size int) (*splicePipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	p := &splicePipe{r: fds[0], w: fds[1], size: 64 << 10}
	// A larger pipe means fewer splices per megabyte. The kernel may refuse
	// (pipe-max-size, per-user pipe page limits); the default size works too.
	if got, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, size); err == nil {
		p.size = got
	} else if got, err := unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0); err == nil {
		p.size = got
	}
	return p, nil
}

func (p *splicePipe) close() {
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}

// splicePipes is a Relay's bounded free list of empty pipes, so that a burst
// does not pay for pipe2 and fcntl, and idle tunnels hold none.
type splicePipes struct {
	size int        // capacity to ask for
	mu   sync.Mutex // guards free
	free []*splicePipe
}

func newSplicePipes(size int) *splicePipes {
	if size <= 0 {
		size = defaultPipeSize
	}
	return &splicePipes{size: size}
}

func (ps *splicePipes) get() (*splicePipe, error) {
	ps.mu.Lock()
	if n := len(ps.free); n > 0 {
		p := ps.free[n-1]
		ps.free = ps.free[:n-1]
		ps.mu.Unlock()
		return p, nil
	}
	ps.mu.Unlock()
	return newSplicePipe(ps.size)
}

// put keeps p for reuse if it is empty and there is room; a pipe still
// holding bytes (its tunnel failed mid-burst) is closed with them.
func (ps *splicePipes) put(p *splicePipe) {
	if p.n == 0 {
		ps.mu.Lock()
		if len(ps.free) < maxSparePipes {
			ps.free = append(ps.free, p)
			ps.mu.Unlock()
			return
		}
		ps.mu.Unlock()
	}
	p.close()
}

// closeAll closes the spare pipes.
func (ps *splicePipes) closeAll() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.free {
		p.close()
	}
	ps.free = nil
}

// spare reports how many pipes are kept, for tests.
func (ps *splicePipes) spare() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.free)
}
