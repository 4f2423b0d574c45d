package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// bulkDirs are the bulk sub-scenarios: client to server, server to client,
// and both at once on the same tunnel.
var bulkDirs = []struct {
	name string
	mode byte
}{{"up", modeSink}, {"down", modeSource}, {"both", modeBoth}}

// scenarioBulk moves bytes through one tunnel to the raw sink/source for a
// fixed time per direction and reports MB (10^6 bytes) per second of wall
// time and per second of proxy CPU.
func scenarioBulk(ctx context.Context, env *benchEnv, rp *runningProxy) *outcome {
	o := newOutcome()
	for _, dir := range bulkDirs {
		if ctx.Err() != nil {
			break
		}
		bytes, c, err := bulkOnce(ctx, env, rp, dir.mode)
		if err != nil {
			o.fail(fmt.Errorf("%s: %w", dir.name, err))
			continue
		}
		o.set(dir.name+"_mb", bytes/1e6)
		o.set(dir.name+"_mb_s", bytes/1e6/c.Wall)
		o.setWindow(dir.name+"_", c)
		o.setSyscalls(dir.name+"_", c.Syscalls, bytes/1e6)
		if rp.proc != nil {
			o.set(dir.name+"_mb_per_cpu_s", ratio(bytes/1e6, c.Proxy))
		}
	}
	return o
}

// bulkOnce runs one direction and returns bytes moved and the window's
// wall and CPU times.
func bulkOnce(ctx context.Context, env *benchEnv, rp *runningProxy, mode byte) (float64, windowCPU, error) {
	tctx, cancel := context.WithTimeout(ctx, setupLimit)
	t, err := rp.dialer().dial(tctx, env.echo.Raw)
	cancel()
	if err != nil {
		return 0, windowCPU{}, err
	}
	defer t.Close()
	if _, err := t.Write([]byte{mode}); err != nil {
		return 0, windowCPU{}, fmt.Errorf("write mode: %w", err)
	}
	win, err := startWindow(env, rp)
	if err != nil {
		return 0, windowCPU{}, err
	}
	dur := env.opts.bulkDur
	t0 := time.Now()
	var n int64
	switch mode {
	case modeSink:
		n, err = bulkUp(t, t0.Add(dur))
	case modeSource:
		n, err = bulkRead(t, t0.Add(dur))
	case modeBoth:
		var wg sync.WaitGroup
		var up int64
		var upErr error
		wg.Go(func() { up, upErr = bulkWrite(t, t0.Add(dur)) })
		n, err = bulkRead(t, t0.Add(dur))
		wg.Wait()
		n += up
		err = errors.Join(err, upErr)
	}
	c, werr := win.end()
	if err = errors.Join(err, werr); err != nil {
		return 0, windowCPU{}, err
	}
	return float64(n), c, nil
}

// bulkUp writes whole chunks until the deadline has passed and the total
// is a multiple of sinkAck, then waits for the sink's ack of exactly that
// total, so bytes still buffered in sockets are not counted as moved.
func bulkUp(t *tunnel, until time.Time) (int64, error) {
	buf := make([]byte, bulkChunk)
	// Finishing the last sinkAck unit takes milliseconds; a proxy that
	// stops reading must not hang the run.
	_ = t.SetWriteDeadline(until.Add(10 * time.Second))
	var n int64
	for time.Now().Before(until) || n%sinkAck != 0 {
		k, err := t.Write(buf)
		n += int64(k)
		if err != nil {
			return 0, fmt.Errorf("write after %d bytes: %w", n, err)
		}
	}
	_ = t.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [8]byte
	for {
		if _, err := io.ReadFull(t.br, b[:]); err != nil {
			return 0, fmt.Errorf("read sink ack (sent %d bytes): %w", n, err)
		}
		if got := int64(binary.BigEndian.Uint64(b[:])); got >= n {
			return got, nil
		}
	}
}

// bulkWrite writes zeros until the deadline; a deadline error is the
// normal end.
func bulkWrite(t *tunnel, until time.Time) (int64, error) {
	buf := make([]byte, bulkChunk)
	_ = t.SetWriteDeadline(until)
	var n int64
	for {
		k, err := t.Write(buf)
		n += int64(k)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return n, nil
			}
			return n, fmt.Errorf("write after %d bytes: %w", n, err)
		}
	}
}

// bulkRead reads until the deadline and returns the count.
func bulkRead(t *tunnel, until time.Time) (int64, error) {
	buf := make([]byte, bulkChunk)
	_ = t.SetReadDeadline(until)
	var n int64
	for {
		k, err := t.br.Read(buf)
		n += int64(k)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return n, nil
			}
			return n, fmt.Errorf("read after %d bytes: %w", n, err)
		}
	}
}
