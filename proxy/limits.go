package proxy

import (
	"math"
	"syscall"

	"github.com/wsegress/wsegress/proxy/limit"
)

// Limits bounds tunnels globally and per user, client IP and host; see
// limit.Config. It is an alias so that the command line can fill it
// without importing the limit package.
type Limits = limit.Config

// fdsPerTunnel is what one established tunnel costs in descriptors: the
// client socket and the target socket. The relay holds no pipe while a
// direction waits (see proxy/relay); one that spliced with io.Copy would
// hold two more per blocked direction and need 6 here.
const fdsPerTunnel = 2

// DefaultMaxTunnels derives a safe global tunnel limit from the process's
// open-file limit (RLIMIT_NOFILE), see maxTunnelsFor. It reads the soft
// limit: since Go 1.19 the runtime raises it to the hard limit (minus one)
// at start-up (syscall's init, go.dev/issue/46279), so the soft limit is
// what the process may really use, and where raising failed it is still
// the one that bites. If the limit cannot be read it assumes 1024.
func DefaultMaxTunnels() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return maxTunnelsFor(1024)
	}
	return maxTunnelsFor(rl.Cur)
}

// maxTunnelsFor is the formula behind DefaultMaxTunnels for nofile
// descriptors: reserve max(256, nofile/10) for listeners, the metrics
// server, DNS, logs and handshakes in progress, and give every tunnel 2
// of the rest:
//
//	(nofile - max(256, nofile/10)) / 2, at least 1
//
// For 1024 that is 384, for 20,000 it is 9,000, for 1,048,576 it is
// 471,859.
func maxTunnelsFor(nofile uint64) int {
	n := int64(min(nofile, math.MaxInt32))
	n = (n - max(256, n/10)) / fdsPerTunnel
	return int(max(n, 1))
}
