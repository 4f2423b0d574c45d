//go:build !linux

package proxy

// Off Linux the relay has no splice path and cannot wait for readability
// without reading: every direction copies through pooled buffers.

type relaySys struct{}

func (c *relayCopier) init() {}

func (c *relayCopier) canSplice() bool { return false }

func (c *relayCopier) spliceLoop() error { return c.bufferLoop() }

// readChunk reads through the conn: off Linux the relay cannot wait on a
// socket without reading from it.
func (c *relayCopier) readChunk() (*[]byte, int, error) { return c.readBlocking() }

// splicePipes is empty off Linux; it exists so that Relay is the same type
// everywhere.
type splicePipes struct{}

func newSplicePipes(int) *splicePipes { return &splicePipes{} }

func (*splicePipes) closeAll() {}

func (*splicePipes) spare() int { return 0 }
