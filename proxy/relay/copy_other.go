//go:build !linux

package relay

import (
	"context"
	"net"
)

// Off Linux the relay has no splice path and cannot wait for readability
// without reading: every direction copies through pooled buffers.

type sysState struct{}

func (c *copier) init() {}

func (c *copier) canSplice() bool { return false }

func (c *copier) spliceLoop() error { return c.bufferLoop() }

// readChunk reads through the conn: off Linux the relay cannot wait on a
// socket without reading from it.
func (c *copier) readChunk() (*[]byte, int, error) { return c.readBlocking() }

// tryWrite cannot write without waiting off Linux: writeWait does it.
func (c *copier) tryWrite([]byte) (int, error) { return 0, errWriteWouldBlock }

// splicePipes is empty off Linux; it exists so that Relay is the same type
// everywhere.
type splicePipes struct{}

func newSplicePipes(int) *splicePipes { return &splicePipes{} }

func (*splicePipes) closeAll() {}

func (*splicePipes) spare() int { return 0 }

// parker is empty off Linux: there is no epoll set to park directions in.
type parker struct{}

func newParker() *parker { return &parker{} }

// startParked reports false: off Linux every tunnel takes two goroutines.
func (r *Relay) startParked(context.Context, net.Conn, net.Conn, func(Result)) bool {
	return false
}
