//go:build linux

package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// relayPipeSize is the pipe capacity asked for: one splice moves up to
	// this much. Measured in relay_bench_test.go (see BenchmarkRelayBulk).
	relayPipeSize = 256 << 10
	// relaySparePipes bounds the pipes a Relay keeps between bursts; more
	// are closed when given back.
	relaySparePipes = 64
	// relaySpliceFlags: MOVE is a hint to move pages rather than copy them;
	// NONBLOCK makes the pipe side non-blocking (Go's sockets already are).
	relaySpliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
)

// errSpliceUnsupported: the kernel refused to splice from this socket type
// before any byte moved, so the direction falls back to buffers.
var errSpliceUnsupported = errors.New("splice not supported")

// relaySys is a copier's Linux state. The callbacks are bound once per
// tunnel so that handing them to RawConn.Read/Write allocates nothing per
// chunk; they report through n and err.
type relaySys struct {
	src     syscall.RawConn // set if src's socket can be polled directly
	dst     syscall.RawConn // set too if both sockets can splice
	pipe    *splicePipe     // held only while a burst moves
	peekBuf [1]byte
	n       int
	err     error

	peekFn, fillFn, drainFn func(fd uintptr) bool
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

func (c *relayCopier) init() {
	if c.sys.src = rawSocket(c.src); c.sys.src == nil {
		return
	}
	c.sys.peekFn = c.peek
	if c.sys.dst = rawSocket(c.dst); c.sys.dst != nil {
		c.sys.fillFn, c.sys.drainFn = c.fill, c.drain
	}
}

func (c *relayCopier) canSplice() bool { return c.sys.dst != nil }

// waitReadable blocks until src has data, EOF or an error, holding no buffer
// and no pipe: this is what keeps an idle tunnel at two fds and a few KiB.
// Opaque conns cannot be polled; for them the read itself waits.
func (c *relayCopier) waitReadable() error {
	if c.sys.src == nil {
		return nil
	}
	for {
		c.sys.err = nil
		err := c.sys.src.Read(c.sys.peekFn)
		if err == nil {
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

// peek checks for data itself instead of trusting the poller: Go's poller
// is edge-triggered and RawConn.Read resets its state first, so a callback
// that just returned false would sleep through data that is already there.
// A pending socket error is taken (the kernel clears it when reported), so
// it is kept for waitReadable; otherwise a reset would read as a clean EOF.
//
// The raw syscall passes no address buffer: unix.Recvfrom's would escape to
// the heap on every wait. MSG_DONTWAIT means it never blocks.
func (c *relayCopier) peek(fd uintptr) bool {
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.sys.peekBuf[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			c.sys.err = nil // data or EOF
		default:
			c.sys.err = errno
		}
		return true
	}
}

// spliceLoop is the Linux socket-to-socket copier: it waits without a pipe,
// then splices a burst through a pipe borrowed from the Relay. It returns
// io.EOF when src ends.
func (c *relayCopier) spliceLoop() error {
	pipes := c.t.spares.pipes
	for {
		if err := c.waitReadable(); err != nil {
			return err
		}
		p, err := pipes.get()
		if err != nil {
			// No pipe (out of fds?): move this burst through a buffer.
			if err := c.bufferBurst(); err != nil {
				return err
			}
			continue
		}
		c.sys.pipe = p
		err = c.spliceBurst()
		c.sys.pipe = nil
		pipes.put(p)
		if err == errSpliceUnsupported {
			return c.bufferLoop()
		}
		if err != nil {
			return err
		}
	}
}

// spliceBurst moves what src has now through the pipe into dst. It returns
// nil when src has nothing more for the moment (the pipe is then empty),
// io.EOF at the end of src. It waits only for dst, and only while the pipe
// holds data.
func (c *relayCopier) spliceBurst() error {
	p := c.sys.pipe
	for first := true; ; first = false {
		c.sys.n, c.sys.err = 0, nil
		if err := c.sys.src.Read(c.sys.fillFn); err != nil {
			if c.keepWaiting(err, c.src, true) {
				continue
			}
			return c.srcErr(err)
		}
		switch {
		case c.sys.err == unix.EAGAIN:
			return nil
		case c.sys.err == unix.EINVAL && first && c.n == 0:
			return errSpliceUnsupported
		case c.sys.err != nil:
			return c.srcErr(os.NewSyscallError("splice", c.sys.err))
		case c.sys.n == 0:
			return io.EOF
		}
		p.n = c.sys.n
		for p.n > 0 {
			c.sys.n, c.sys.err = 0, nil
			err := c.sys.dst.Write(c.sys.drainFn)
			if c.sys.n > 0 {
				c.count(c.sys.n)
			}
			switch {
			case err == nil && c.sys.err != nil:
				return c.dstErr(os.NewSyscallError("splice", c.sys.err))
			case err != nil && !c.keepWaiting(err, c.dst, false):
				return c.dstErr(err)
			}
		}
	}
}

// fill splices from the socket fd into the empty pipe. It never waits: as
// the pipe is empty, EAGAIN means the socket has nothing, and the caller
// then gives the pipe back rather than hold it while idle.
func (c *relayCopier) fill(fd uintptr) bool {
	for {
		n, err := unix.Splice(int(fd), nil, c.sys.pipe.w, nil, c.sys.pipe.size, relaySpliceFlags)
		if err == unix.EINTR {
			continue
		}
		c.sys.n, c.sys.err = int(n), err
		return true
	}
}

// drain splices the pipe's data into the socket fd, asking to wait for
// room (return false) when the socket is full.
func (c *relayCopier) drain(fd uintptr) bool {
	p := c.sys.pipe
	for p.n > 0 {
		n, err := unix.Splice(p.r, nil, int(fd), nil, p.n, relaySpliceFlags)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
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
		size = relayPipeSize
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
		if len(ps.free) < relaySparePipes {
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
