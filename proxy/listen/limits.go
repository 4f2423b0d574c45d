package listen

import (
	"math"
	"net"
	"net/netip"
	"syscall"
)

// ClientKey returns the prefix a client is counted under for per-IP limits:
// the /32 of an IPv4 address (an IPv4-mapped IPv6 address counts as IPv4)
// and the /64 of an IPv6 address, since one IPv6 host usually holds a whole
// /64 and could otherwise take a fresh address per connection. The zone is
// dropped. An invalid address gives the zero Prefix, which is not counted.
func ClientKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	switch {
	case !ip.IsValid():
		return netip.Prefix{}
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	default:
		p, _ := ip.Prefix(64) // cannot fail for a valid IPv6 address
		return p
	}
}

// addrIP returns the IP of a TCP (or other IP) address, or the zero Addr.
func addrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// DefaultMaxConns derives the default --max-conns from the process's
// open-file limit (RLIMIT_NOFILE, soft: the Go runtime raises it to the hard
// limit at start-up) and the --max-tunnels in force; see MaxConnsFor. If
// the limit cannot be read it assumes 1024, as proxy.DefaultMaxTunnels does.
func DefaultMaxConns(maxTunnels int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return MaxConnsFor(1024, maxTunnels)
	}
	return MaxConnsFor(rl.Cur, maxTunnels)
}

// MaxConnsFor is the formula behind DefaultMaxConns for nofile descriptors.
//
// The default --max-tunnels (proxy.DefaultMaxTunnels) keeps a reserve
// R = max(256, nofile/10) and gives each tunnel 2 fds of the rest:
// T = (nofile - R) / 2. Every tunnel's client conn is also a client
// connection here, so the conn cap must sit above T, or a client arriving
// at a full pool would see its connection closed instead of its 503 with
// Retry-After. Each client conn that is not a tunnel (reading headers,
// after a 407, waiting for its 503, idle keep-alive) costs 1 fd. So the
// default gives half the reserve to such conns and keeps the other half:
//
//	max-conns = T + R/2
//	worst case, every tunnel stalled both ways and every other conn open:
//	2T + (max-conns - T) = 2T + R/2 <= nofile - R/2
//
// which leaves at least R/2 = max(128, nofile/20) fds for the listeners,
// the metrics server (its own small cap), DNS, logs and dials in progress:
//
//	nofile     T (tunnels)   max-conns   per-ip   fds left at worst
//	1024       384           512         256      128
//	20000      9000          10000       5000     1000
//	65536      29491         32767       16383    3278
//	1048576    471859        524287      262143   52430
//
// maxTunnels is the --max-tunnels in force; <= 0 (unlimited tunnels) is
// taken as the default T, which is what the fds can carry. A --max-tunnels
// set above the default T voids the fd guarantee (the operator chose it),
// but max-conns still sits R/2 above it.
func MaxConnsFor(nofile uint64, maxTunnels int) int {
	n := int64(min(nofile, math.MaxInt32))
	reserve := max(256, n/10)
	t := int64(maxTunnels)
	if t <= 0 {
		t = max((n-reserve)/2, 1)
	}
	return int(min(t+reserve/2, math.MaxInt32))
}

// DefaultMaxConnsPerIP is the default --max-conns-per-ip for a given
// --max-conns: half of it (at least 1; 0 when maxConns is unlimited).
//
// Why half: one client key (an IPv4 address or an IPv6 /64) can never take
// every connection, so at least half stays for everyone else, while an
// office behind NAT, a Kubernetes node with SNAT or a VDI farm, which all
// share one address, can still use half of the proxy's connections (256 at
// a 1,024-fd limit, 16,383 at 65,536). Squid and smokescreen set no per-IP
// default at all; a tighter one (a quarter, a fixed number) locks out the
// shared-address users issue 11 is about before it stops a real attacker,
// who can use a few addresses anyway.
func DefaultMaxConnsPerIP(maxConns int) int {
	if maxConns <= 0 {
		return 0
	}
	return max(maxConns/2, 1)
}
