package listen

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestClientKey(t *testing.T) {
	tests := map[string]struct{ ip, want string }{
		"ipv4":              {"192.0.2.7", "192.0.2.7/32"},
		"ipv4-mapped":       {"::ffff:192.0.2.7", "192.0.2.7/32"},
		"ipv6 to /64":       {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		"ipv6 same /64":     {"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		"ipv6 zone dropped": {"fe80::1%eth0", "fe80::/64"},
		"loopback v6":       {"::1", "::/64"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ClientKey(netip.MustParseAddr(tt.ip)); got != netip.MustParsePrefix(tt.want) {
				t.Errorf("ClientKey(%s) = %v; want %s", tt.ip, got, tt.want)
			}
		})
	}
	if got := ClientKey(netip.Addr{}); got.IsValid() {
		t.Errorf("ClientKey(invalid) = %v; want the zero Prefix", got)
	}
}

// maxTunnelsFor mirrors proxy.maxTunnelsFor (which this package must not
// import) for the table below.
func maxTunnelsFor(nofile uint64) int {
	n := int64(nofile)
	return int(max((n-max(256, n/10))/2, 1))
}

func TestMaxConnsFor(t *testing.T) {
	tests := []struct {
		nofile                uint64
		tunnels, conns, perIP int
		leftAtWorst           int
	}{
		{1024, 384, 512, 256, 128},
		{20000, 9000, 10000, 5000, 1000},
		{65536, 29491, 32767, 16383, 3278},
		{1 << 20, 471859, 524287, 262143, 52430},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.nofile), func(t *testing.T) {
			tun := maxTunnelsFor(tt.nofile)
			if tun != tt.tunnels {
				t.Fatalf("maxTunnelsFor(%d) = %d; want %d (table out of date with proxy/usage.go?)", tt.nofile, tun, tt.tunnels)
			}
			conns := MaxConnsFor(tt.nofile, tun)
			if conns != tt.conns {
				t.Errorf("MaxConnsFor(%d, %d) = %d; want %d", tt.nofile, tun, conns, tt.conns)
			}
			if conns <= tun {
				t.Errorf("max-conns %d not above max-tunnels %d: a full pool would close conns instead of 503", conns, tun)
			}
			// Every tunnel stalled both ways (2 fds) plus every other
			// client conn (1 fd) must leave room under the fd limit.
			worst := 2*tun + (conns - tun)
			if left := int(tt.nofile) - worst; left != tt.leftAtWorst || left < 128 {
				t.Errorf("fds left at worst = %d; want %d (and >= 128)", left, tt.leftAtWorst)
			}
			if got := DefaultMaxConnsPerIP(conns); got != tt.perIP {
				t.Errorf("DefaultMaxConnsPerIP(%d) = %d; want %d", conns, got, tt.perIP)
			}
			// Unlimited tunnels take the default T.
			if got := MaxConnsFor(tt.nofile, 0); got != conns {
				t.Errorf("MaxConnsFor(%d, 0) = %d; want %d", tt.nofile, got, conns)
			}
		})
	}
	if got := DefaultMaxConnsPerIP(0); got != 0 {
		t.Errorf("DefaultMaxConnsPerIP(0) = %d; want 0 (unlimited)", got)
	}
	if got := DefaultMaxConns(100); got <= 100 {
		t.Errorf("DefaultMaxConns(100) = %d; want above 100", got)
	}
}

func TestParseProxyFrom(t *testing.T) {
	got, err := ParseProxyFrom([]string{"10.0.0.0/8", " 192.0.2.1 ", "2001:db8::/32", "::ffff:10.1.0.0/112", ""})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "10.1.0.0/16"}
	if len(got) != len(want) {
		t.Fatalf("ParseProxyFrom = %v; want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("ParseProxyFrom[%d] = %v; want %s", i, got[i], want[i])
		}
	}
	_, err = ParseProxyFrom([]string{"10.0.0.1/8", "nonsense", "::ffff:0:0/90"})
	if err == nil || !containsAll(err.Error(), "10.0.0.0/8", "nonsense", "IPv4 CIDRs") {
		t.Errorf("ParseProxyFrom(bad) error = %v; want all three named with advice", err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
